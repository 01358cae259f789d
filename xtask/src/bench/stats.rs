//! Medians, ranges and ratios of a body's samples: every figure of a
//! generated block is computed here from what the run measured.
use serde::{Deserialize, Serialize};

/// One measured quantity under several conditions, as a body prints it.
#[derive(Deserialize, Serialize, Clone, Debug)]
pub struct Metric {
    pub id: String,
    pub title: String,
    pub unit: String,
    /// "lower" or "higher": which way is better.
    pub better: String,
    /// The condition the others are divided by, if any.
    pub baseline: Option<String>,
    /// Condition → samples, in the body's order.
    pub samples: indexmap_like::Ordered,
}

/// A condition's summary.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Summary {
    pub cond: String,
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// median / the baseline's median.
    pub ratio: Option<f64>,
}

pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// One row per condition with samples, in the body's order.
pub fn summarize(m: &Metric) -> Vec<Summary> {
    let base = m.baseline.as_ref().and_then(|b| m.samples.get(b)).and_then(|xs| median(xs));
    m.samples
        .iter()
        .filter_map(|(cond, xs)| {
            let med = median(xs)?;
            let finite = xs.iter().copied().filter(|x| x.is_finite());
            let min = finite.clone().fold(f64::INFINITY, f64::min);
            let max = finite.fold(f64::NEG_INFINITY, f64::max);
            let ratio = match (base, &m.baseline) {
                (Some(b), Some(name)) if name != cond && b != 0.0 => Some(med / b),
                _ => None,
            };
            Some(Summary { cond: cond.clone(), n: xs.len(), median: med, min, max, ratio })
        })
        .collect()
}

/// A number as a table shows it: about 4 significant digits, no exponent.
pub fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.5}")
    }
}

/// Condition → samples with the order of the JSON object kept (serde_json's
/// map sorts its keys; the body's order is the reading order).
pub mod indexmap_like {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::MapAccess, ser::SerializeMap};

    #[derive(Clone, Debug, Default)]
    pub struct Ordered(pub Vec<(String, Vec<f64>)>);

    impl Ordered {
        pub fn get(&self, key: &str) -> Option<&Vec<f64>> {
            self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
        }
        pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<f64>)> {
            self.0.iter().map(|(k, v)| (k, v))
        }
    }

    impl<'de> Deserialize<'de> for Ordered {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Ordered;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object of condition → list of numbers")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<String, Vec<Option<f64>>>()? {
                        // A body writes NaN as null (JSON has no NaN): kept as NaN, left out of medians.
                        out.push((k, v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect()));
                    }
                    Ok(Ordered(out))
                }
            }
            d.deserialize_map(Visit)
        }
    }

    impl Serialize for Ordered {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in &self.0 {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(json: &str) -> Metric {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn medians_ranges_and_ratios_to_the_baseline() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        let m = metric(
            r#"{"id":"x","title":"t","unit":"s","better":"lower","baseline":"none",
                "samples":{"none":[2,4,3],"traced":[6,3,5,9],"empty":[]}}"#,
        );
        let rows = summarize(&m);
        assert_eq!(rows.len(), 2, "a condition without samples has no row");
        assert_eq!((rows[0].cond.as_str(), rows[0].median, rows[0].ratio), ("none", 3.0, None));
        assert_eq!((rows[1].cond.as_str(), rows[1].median, rows[1].min, rows[1].max), ("traced", 5.5, 3.0, 9.0));
        assert_eq!(rows[1].ratio, Some(5.5 / 3.0));
    }

    #[test]
    fn conditions_keep_the_bodys_order_and_null_is_not_a_number() {
        let m = metric(r#"{"id":"x","title":"t","unit":"s","better":"lower","baseline":null,"samples":{"b":[1],"a":[null,2]}}"#);
        let rows = summarize(&m);
        assert_eq!(rows.iter().map(|r| r.cond.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!((rows[1].median, rows[1].n), (2.0, 2));
    }

    #[test]
    fn numbers_print_with_about_four_digits() {
        assert_eq!(fmt(123456.7), "123457");
        assert_eq!(fmt(123.45), "123.5");
        assert_eq!(fmt(1.23456), "1.235");
        assert_eq!(fmt(0.0), "0");
    }
}
