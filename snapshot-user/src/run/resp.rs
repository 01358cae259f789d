//! A small RESP2 client: commands out (pipelined), replies in. Enough for the
//! load generator and for INFO/BGSAVE; it talks to any Redis-compatible server.
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    /// The reply as text, or the server's error as an error.
    pub fn text(self) -> Result<String> {
        match self {
            Reply::Simple(s) => Ok(s),
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Error(e) => bail!("server replied: {e}"),
            other => bail!("unexpected reply {other:?}"),
        }
    }
}

pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        // A server that stops answering must not hang the run forever.
        stream.set_read_timeout(Some(Duration::from_secs(30))).context("socket timeout")?;
        let writer = stream.try_clone().context("socket")?;
        Ok(Conn { reader: BufReader::with_capacity(1 << 16, stream), writer, out: Vec::with_capacity(1 << 16) })
    }

    /// Queues one command; `flush` sends everything queued.
    pub fn push(&mut self, args: &[&[u8]]) {
        self.out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            self.out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            self.out.extend_from_slice(arg);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer.write_all(&self.out).context("sending to the server")?;
        self.out.clear();
        Ok(())
    }

    pub fn call(&mut self, args: &[&str]) -> Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.push(&args);
        self.flush()?;
        self.read()
    }

    /// INFO [section] as name -> value.
    pub fn info(&mut self, section: &str) -> Result<Info> {
        let text = self.call(&["INFO", section])?.text().context("INFO")?;
        Ok(Info::parse(&text))
    }

    pub fn read(&mut self) -> Result<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1);
        let number = || rest.parse::<i64>().with_context(|| format!("bad RESP length {rest:?}"));
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(number()?),
            "$" => match number()? {
                n if n < 0 => Reply::Bulk(None),
                n => Reply::Bulk(Some(self.bulk(n as usize)?)),
            },
            "*" => match number()? {
                n if n < 0 => Reply::Array(Vec::new()),
                n => Reply::Array((0..n).map(|_| self.read()).collect::<Result<_>>()?),
            },
            _ => bail!("not a RESP reply: {line:?}"),
        })
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).context("reading from the server")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            bail!("empty RESP line");
        }
        Ok(line.to_string())
    }

    fn bulk(&mut self, len: usize) -> Result<Vec<u8>> {
        let mut data = vec![0; len + 2];
        self.reader.read_exact(&mut data).context("reading from the server")?;
        data.truncate(len);
        Ok(data)
    }
}

/// INFO's `name:value` lines.
#[derive(Default, Debug, Clone)]
pub struct Info(HashMap<String, String>);

impl Info {
    pub fn parse(text: &str) -> Info {
        Info(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn num(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }

    /// `db0:keys=N,...` -> N.
    pub fn keys(&self) -> u64 {
        let db = self.get("db0").unwrap_or("");
        db.split(',').find_map(|f| f.strip_prefix("keys=")).and_then(|n| n.parse().ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields() {
        let info = Info::parse("# Persistence\r\nrdb_bgsave_in_progress:1\r\n\r\n# Keyspace\r\ndb0:keys=42,expires=0\r\n");
        assert_eq!(info.num("rdb_bgsave_in_progress"), Some(1));
        assert_eq!(info.keys(), 42);
        assert_eq!(info.num("missing"), None);
    }
}
