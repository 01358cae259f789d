//! The event loop: one thread, mio (epoll), every client and the snapshot child's pipe.
//!
//! Per readable event a client's input is read, every complete command in it is executed and
//! its reply appended to the client's single output buffer, then that buffer is written with
//! one write() per read batch; only if the socket is full does the client wait for WRITABLE.
//! A cron tick (10 Hz) reaps the child, applies the save policy, expires keys and samples ops/s.

use crate::commands::{self, Args, Conn, ShutdownSave, State};
use crate::persist::CHILD_TOKEN;
use crate::resp::{self, Parse, Parser};
use anyhow::{Context, Result};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(2);
const FIRST_CLIENT: usize = 3;
const READ_CHUNK: usize = 16 * 1024;
/// Output size at which replies are written before the whole input batch is processed.
const FLUSH_AT: usize = 256 * 1024;
/// Redis's default client-query-buffer-limit.
const MAX_QUERY: usize = 1 << 30;
const CRON: Duration = Duration::from_millis(100);

struct Client {
    sock: TcpStream,
    inbuf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    out_pos: usize,
    conn: Conn,
    parser: Parser,
    want_write: bool,
    /// In `Server::pending` (replies to write at the end of this round).
    queued: bool,
    token: Token,
}

pub struct Server {
    poll: Poll,
    listener: TcpListener,
    signals: UnixStream,
    clients: Vec<Option<Client>>,
    free_slots: Vec<usize>,
    pending: Vec<usize>,
    /// accept() failed (EMFILE, ENFILE, ENOBUFS...): the listener is edge-triggered, so the
    /// connections still queued bring no new event; retry from the loop until it drains.
    accept_blocked: bool,
    pub st: State,
}

impl Server {
    pub fn new(
        poll: Poll,
        mut listener: TcpListener,
        mut signals: UnixStream,
        st: State,
    ) -> Result<Server> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .context("registering listener")?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .context("registering signal pipe")?;
        Ok(Server {
            poll,
            listener,
            signals,
            clients: Vec::new(),
            free_slots: Vec::new(),
            pending: Vec::new(),
            accept_blocked: false,
            st,
        })
    }

    /// Runs until SHUTDOWN or a signal.
    pub fn run(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_cron = Instant::now() + CRON;
        let mut reap_soon = false;
        loop {
            let now = Instant::now();
            let mut timeout = if reap_soon {
                Duration::from_millis(1)
            } else {
                next_cron.saturating_duration_since(now)
            };
            if let Some(w) = self.st.persist.forkless_wait() {
                timeout = timeout.min(w);
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("epoll_wait");
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    CHILD_TOKEN => {
                        if self.st.persist.read_child() {
                            reap_soon = true;
                        }
                    }
                    SIGNALS => {
                        let mut b = [0u8; 64];
                        while matches!(self.signals.read(&mut b), Ok(n) if n > 0) {}
                        crate::log("Received SIGTERM/SIGINT, shutting down.");
                        if commands::prepare_shutdown(&mut self.st, ShutdownSave::Default).is_err()
                        {
                            // Like Redis: exiting now would lose every write since the last
                            // snapshot, so keep serving (SHUTDOWN NOSAVE still exits).
                            crate::log(
                                "SIGTERM received but errors trying to shut down the server, \
                                 check the logs for more information; still serving",
                            );
                            continue;
                        }
                        self.close_all();
                        crate::log("Server is now ready to exit, bye bye...");
                        return Ok(());
                    }
                    Token(t) => {
                        self.client_event(t - FIRST_CLIENT, ev.is_readable(), ev.is_read_closed())
                    }
                }
                if self.st.shutdown {
                    self.flush_pending();
                    self.close_all();
                    crate::log("Server is now ready to exit, bye bye...");
                    return Ok(());
                }
            }
            self.flush_pending();
            // A forkless save advances between rounds of events.
            self.st.persist.forkless_step(&mut self.st.table);
            if self.accept_blocked {
                // A client may have left in this round, freeing a descriptor.
                self.accept();
            }
            if reap_soon
                && self
                    .st
                    .persist
                    .try_reap(&mut self.st.table, &self.st.registry)
            {
                reap_soon = false;
            }
            if Instant::now() >= next_cron {
                next_cron = Instant::now() + CRON;
                self.cron();
            }
        }
    }

    fn cron(&mut self) {
        if self.accept_blocked {
            self.accept();
        }
        let st = &mut self.st;
        st.persist.reap_killed();
        if st.persist.child_alive() {
            st.persist.read_child();
            st.persist.try_reap(&mut st.table, &st.registry);
        } else if st.persist.save_due() {
            crate::log(&format!(
                "{} changes: saving (save policy)",
                st.persist.dirty
            ));
            if let Err(e) = st.persist.bgsave(&mut st.table, &st.registry) {
                crate::log(&e);
            }
        } else {
            let _ = st.table.fit();
        }
        st.table.expire_step(crate::table::now_ms());
        st.stats.sample_ops();
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let slot = self.free_slots.pop().unwrap_or_else(|| {
                        self.clients.push(None);
                        self.clients.len() - 1
                    });
                    if let Err(e) = self.poll.registry().register(
                        &mut sock,
                        Token(slot + FIRST_CLIENT),
                        Interest::READABLE,
                    ) {
                        crate::log(&format!("can't register client: {e}"));
                        self.free_slots.push(slot);
                        continue;
                    }
                    self.clients[slot] = Some(Client {
                        sock,
                        inbuf: vec![0; READ_CHUNK],
                        start: 0,
                        end: 0,
                        out: Vec::new(),
                        out_pos: 0,
                        conn: Conn {
                            local: peer.ip().is_loopback(),
                            ..Conn::default()
                        },
                        parser: Parser::default(),
                        want_write: false,
                        queued: false,
                        token: Token(slot + FIRST_CLIENT),
                    });
                    self.st.connected_clients += 1;
                    self.st.stats.total_connections += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if self.accept_blocked {
                        crate::log("Accepting client connections again");
                        self.accept_blocked = false;
                    }
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // e.g. EMFILE: keep serving the clients we have and retry from the loop.
                    if !self.accept_blocked {
                        crate::log(&format!(
                            "Error accepting a client connection: {e} (retrying every 100 ms \
                             and whenever a client disconnects)"
                        ));
                        self.accept_blocked = true;
                    }
                    return;
                }
            }
        }
    }

    fn client_event(&mut self, slot: usize, readable: bool, read_closed: bool) {
        let Some(Some(c)) = self.clients.get_mut(slot) else {
            return;
        };
        let mut dead = false;
        if readable {
            // Edge-triggered: read until the socket is drained.
            loop {
                if c.end == c.inbuf.len() {
                    if c.start > 0 {
                        c.inbuf.copy_within(c.start..c.end, 0);
                        c.end -= c.start;
                        c.start = 0;
                    } else if c.inbuf.len() >= MAX_QUERY {
                        crate::log("closing client that reached the max query buffer length");
                        dead = true;
                        break;
                    } else {
                        let n = c.inbuf.len() * 2;
                        c.inbuf.resize(n, 0);
                    }
                }
                let room = c.inbuf.len() - c.end;
                match c.sock.read(&mut c.inbuf[c.end..]) {
                    Ok(0) => {
                        // Peer closed: answer what it sent before (best effort), then close.
                        let _ = flush(c, self.poll.registry());
                        dead = true;
                        break;
                    }
                    Ok(n) => {
                        c.end += n;
                        process(&mut self.st, c);
                        if over_output_limit(&mut self.st, c) {
                            dead = true;
                            break;
                        }
                        // A long pipeline: don't let its replies pile up until the input ends.
                        if c.out.len() - c.out_pos > FLUSH_AT && flush(c, self.poll.registry()) {
                            dead = true;
                            break;
                        }
                        // A short read drained the socket: the next data brings a new edge,
                        // so the read that would only say EAGAIN can be skipped (unless the
                        // peer's FIN came with this edge: then read on to see the EOF).
                        if c.conn.close || self.st.shutdown || (n < room && !read_closed) {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        dead = true;
                        break;
                    }
                }
            }
        }
        if dead {
            self.close(slot);
        } else if readable {
            // Replies go out after every ready client has been read (see `flush_pending`).
            if !c.queued {
                c.queued = true;
                self.pending.push(slot);
            }
        } else {
            self.flush_and_maybe_close(slot);
        }
    }

    /// Writes the replies of every client served in this round of events: all reads first, then
    /// all writes, so answering one client doesn't wake its peer while others still wait to be read.
    fn flush_pending(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        for &slot in &pending {
            if let Some(Some(c)) = self.clients.get_mut(slot) {
                c.queued = false;
                self.flush_and_maybe_close(slot);
            }
        }
        pending.clear();
        self.pending = pending;
    }

    fn flush_and_maybe_close(&mut self, slot: usize) {
        let Some(Some(c)) = self.clients.get_mut(slot) else {
            return;
        };
        let dead = flush(c, self.poll.registry());
        if dead || (c.conn.close && c.out_pos == c.out.len()) {
            self.close(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut c) = self.clients[slot].take() {
            let _ = self.poll.registry().deregister(&mut c.sock);
            // shutdown() sends the FIN now even if a snapshot child still holds a copy of the fd.
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
            self.free_slots.push(slot);
            self.st.connected_clients -= 1;
        }
    }

    fn close_all(&mut self) {
        for slot in 0..self.clients.len() {
            if let Some(c) = self.clients[slot].as_mut() {
                // Best effort: deliver what was already answered.
                let _ = c.sock.write(&c.out[c.out_pos..]);
            }
            self.close(slot);
        }
    }
}

/// Like Redis's `client-output-buffer-limit` hard limit: a client whose unsent replies pass it
/// is dropped (with its replies), so one that never reads can't grow our memory without bound.
fn over_output_limit(st: &mut State, c: &Client) -> bool {
    let pending = (c.out.len() - c.out_pos) as u64;
    if st.output_limit == 0 || pending <= st.output_limit {
        return false;
    }
    st.output_limit_disconnections += 1;
    let name = c.conn.name.as_deref().unwrap_or_default().escape_ascii();
    crate::log(&format!(
        "Client name={name} closed for overcoming of output buffer limits \
         ({pending} bytes pending, limit {})",
        st.output_limit
    ));
    true
}

/// Executes every complete command in the client's input (stopping early once the replies
/// pass the output limit: the client is then dropped).
fn process(st: &mut State, c: &mut Client) {
    while c.start < c.end && !c.conn.close && !st.shutdown {
        if st.output_limit > 0 && (c.out.len() - c.out_pos) as u64 > st.output_limit {
            break;
        }
        let authed = st.requirepass.is_none() || c.conn.authed;
        let buf = &mut c.inbuf[c.start..c.end];
        match c.parser.parse(buf, authed) {
            Parse::Incomplete => break,
            Parse::Error(msg) => {
                resp::err(&mut c.out, &format!("ERR {msg}"));
                c.conn.close = true;
                c.start = c.end;
                break;
            }
            Parse::Done(n) => {
                if !c.parser.args.is_empty() {
                    let a = Args {
                        buf: &*buf,
                        r: &c.parser.args,
                    };
                    let during_save = st.persist.child_alive();
                    let t = Instant::now();
                    let id = commands::execute(st, &mut c.conn, &a, &mut c.out);
                    let ns = t.elapsed().as_nanos() as u64;
                    st.stats.total_commands += 1;
                    if let Some(id) = id {
                        st.latency.record(id, during_save, ns);
                    }
                }
                c.start += n;
            }
        }
    }
    if c.start == c.end {
        c.start = 0;
        c.end = 0;
        // Give back the room a big request needed.
        if c.inbuf.len() > 4 * READ_CHUNK {
            c.inbuf = vec![0; READ_CHUNK];
        }
    }
}

/// Writes pending output; asks for WRITABLE only while the socket is full. True = connection dead.
fn flush(c: &mut Client, reg: &mio::Registry) -> bool {
    while c.out_pos < c.out.len() {
        match c.sock.write(&c.out[c.out_pos..]) {
            Ok(0) => return true,
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    let pending = c.out_pos < c.out.len();
    if !pending {
        c.out.clear();
        c.out_pos = 0;
        if c.out.capacity() > (1 << 20) {
            c.out = Vec::new();
        }
    }
    if pending != c.want_write {
        let interest = if pending {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        c.want_write = pending;
        if reg.reregister(&mut c.sock, c.token, interest).is_err() {
            return true;
        }
    }
    false
}
