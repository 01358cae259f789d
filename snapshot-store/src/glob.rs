//! Glob matching on bytes for SCAN MATCH and CONFIG GET: `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
//! Iterative with single-star backtracking, so no pattern can blow up the stack.

pub fn matches(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, len)) = class(&pat[p..], s[i])
                        && ok
                    {
                        p += len;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() => {
                    if pat[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against a `[...]` class at the start of `pat`; returns (matched, class length).
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut j = 1;
    let neg = pat.get(1) == Some(&b'^');
    if neg {
        j += 1;
    }
    let mut hit = false;
    while j < pat.len() && pat[j] != b']' {
        if pat[j] == b'\\' && j + 1 < pat.len() {
            hit |= pat[j + 1] == c;
            j += 2;
        } else if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            let (a, b) = (pat[j].min(pat[j + 2]), pat[j].max(pat[j + 2]));
            hit |= (a..=b).contains(&c);
            j += 3;
        } else {
            hit |= pat[j] == c;
            j += 1;
        }
    }
    if j >= pat.len() {
        return None; // unterminated class: treat '[' literally
    }
    Some((hit != neg, j + 1))
}

#[cfg(test)]
mod tests {
    use super::matches;
    #[test]
    fn globs() {
        assert!(matches(b"key:*", b"key:12"));
        assert!(!matches(b"key:*", b"kex:12"));
        assert!(matches(b"k?y", b"key"));
        assert!(matches(b"*1", b"key:1"));
        assert!(matches(b"k[a-f]y", b"key"));
        assert!(!matches(b"k[^a-f]y", b"key"));
        assert!(matches(b"*", b""));
        assert!(matches(b"a\\*b", b"a*b"));
    }
}
