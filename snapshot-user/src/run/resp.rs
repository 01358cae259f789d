//! A small RESP2 client: commands out (pipelined), replies in. Enough for the
//! load generator and for INFO/BGSAVE; it talks to any Redis-compatible server.
//!
//! Why not a crate: `redis` is a whole client (connection manager, its own
//! value and error types, many dependencies) for five reply kinds read from a
//! blocking socket; `redis-protocol` does only the framing, over `bytes`
//! buffers that a blocking reader would still have to fill and resize, so the
//! reading code here would stay and the parser (two short functions, checked
//! against a real redis-server below) would only move; it is not in the
//! offline crate cache either. (LZF: see snapshot-store/src/rdb/lzf.rs.)
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

    /// A real redis-server on a free port in a private directory, killed by pid on drop.
    struct Redis {
        child: std::process::Child,
        _dir: tempfile::TempDir,
        addr: SocketAddr,
    }

    impl Redis {
        fn start() -> Redis {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed (cargo xtask test installs it)");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut redis = Redis { child, _dir: dir, addr };
            while TcpStream::connect(addr).is_err() {
                assert!(redis.child.try_wait().unwrap().is_none(), "redis-server exited");
                std::thread::sleep(Duration::from_millis(10));
            }
            redis
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn every_reply_kind_from_a_real_redis() {
        let redis = Redis::start();
        let mut c = Conn::connect(redis.addr).unwrap();
        let bulk = |b: &[u8]| Reply::Bulk(Some(b.to_vec()));
        assert_eq!(c.call(&["PING"]).unwrap(), Reply::Simple("PONG".into()));
        assert_eq!(c.call(&["SET", "k", "a\r\nb"]).unwrap(), Reply::Simple("OK".into()));
        assert_eq!(c.call(&["SET", "empty", ""]).unwrap(), Reply::Simple("OK".into()));
        assert_eq!(c.call(&["INCRBY", "n", "-7"]).unwrap(), Reply::Int(-7));
        assert_eq!(c.call(&["GET", "k"]).unwrap(), bulk(b"a\r\nb"));
        let mget = c.call(&["MGET", "k", "missing", "empty"]).unwrap();
        assert_eq!(mget, Reply::Array(vec![bulk(b"a\r\nb"), Reply::Bulk(None), bulk(b"")]));
        assert_eq!(c.call(&["LRANGE", "nolist", "0", "-1"]).unwrap(), Reply::Array(Vec::new()));
        assert_eq!(c.call(&["BLPOP", "nolist", "0.01"]).unwrap(), Reply::Array(Vec::new()));
        let Reply::Error(e) = c.call(&["NOSUCHCOMMAND"]).unwrap() else { panic!("an error reply") };
        assert!(e.starts_with("ERR unknown command"), "{e}");
        assert!(c.call(&["INCR", "k"]).unwrap().text().unwrap_err().to_string().starts_with("server replied: ERR"));
        assert_eq!(c.call(&["GET", "k"]).unwrap().text().unwrap(), "a\r\nb");
        assert!(c.call(&["INCR", "n"]).unwrap().text().unwrap_err().to_string().contains("unexpected reply Int(-6)"));
        // Pipelined: both queued, one send, replies in order.
        c.push(&[b"SET", b"p", b"1"]);
        c.push(&[b"GET", b"p"]);
        c.flush().unwrap();
        assert_eq!((c.read().unwrap(), c.read().unwrap()), (Reply::Simple("OK".into()), bulk(b"1")));
        assert_eq!(c.info("keyspace").unwrap().keys(), 4);
        assert_eq!(c.info("server").unwrap().num("tcp_port"), Some(u64::from(redis.addr.port())));
        // The server going away is an error, not a hang or a panic.
        assert_eq!(c.call(&["QUIT"]).unwrap(), Reply::Simple("OK".into()));
        assert!(c.read().unwrap_err().to_string().contains("closed the connection"));
    }
}
