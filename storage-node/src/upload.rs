//! Receiving a shard body: streamed into a `tmp/` file and hashed into its bao outboard while it
//! arrives, so that when the last byte lands only the fsyncs and the index write remain.
//!
//! The async side reads QUIC chunks and hands them (zero-copy `Bytes`) through a bounded channel
//! to one blocking task, which writes each chunk to the file and feeds it to the outboard
//! builder, and starts the kernel's write-back of what it wrote every MiB (Linux
//! `sync_file_range`), so the final fsync has little left to do. The outboard's root is the BLAKE3 hash of the body; the caller compares it with the
//! shard id before anything is renamed into place.

use std::{
    fs::File,
    io::{self, Read, Write},
    sync::Arc,
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use granary_protocol::{
    ErrorCode, ShardId,
    verified::{self, Outboard},
};
use quinn::RecvStream;
use tokio::{
    sync::mpsc,
    time::{Instant, timeout_at},
};

use crate::{
    blobs::Staged,
    state::{Reject, State},
};

/// A body received in full, hashed, and written (not yet fsynced) to `tmp/`.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) outboard: Outboard,
    pub(crate) staged: Staged,
    pub(crate) file: File,
}

/// Pulls chunks from the channel, writing each to `file` as it passes through.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
    file: File,
    written: u64,
    flushed: u64,
}

/// Received bytes are handed to the writer thread in runs of at least this many (see `pump`).
const COALESCE: usize = 256 << 10;

/// Start write-back every this many bytes, so the final fsync has little left to do.
const WRITEBACK_STEP: u64 = 1 << 20;

impl ChannelReader {
    fn kick_writeback(&mut self) {
        #[cfg(target_os = "linux")]
        if self.written - self.flushed >= WRITEBACK_STEP {
            use std::os::fd::AsRawFd;
            // SAFETY: the fd is owned by `self.file` and open; sync_file_range only starts
            // asynchronous write-back of the given range and touches no memory of ours.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.flushed as libc::off64_t,
                    (self.written - self.flushed) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.flushed = self.written;
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.file.write_all(&b)?;
                    self.written += b.len() as u64;
                    self.kick_writeback();
                    self.cur = b;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

enum Pumped {
    Done,
    WorkerGone,
}

/// Reads exactly `size` bytes then the end of the stream, by `deadline`, each read within
/// `read_timeout`, forwarding chunks to `tx`.
async fn pump(
    recv: &mut RecvStream,
    size: u64,
    deadline: Instant,
    read_timeout: Duration,
    tx: &mpsc::Sender<Bytes>,
) -> Result<Pumped, Reject> {
    let mut got = 0u64;
    // QUIC hands the body over in packet-sized chunks (about 1.2-1.5 KB). Passing each to the
    // writer thread would cost a wake-up and a `write(2)` per packet; they are gathered into
    // runs of `COALESCE` bytes first (a chunk at least that large passes through uncopied).
    let mut run = BytesMut::new();
    loop {
        let until = deadline.min(Instant::now() + read_timeout);
        let chunk = timeout_at(until, recv.read_chunk(1 << 20, true))
            .await
            .map_err(|_| {
                Reject::new(
                    ErrorCode::Timeout,
                    format!("body stalled at {got} of {size} bytes"),
                )
            })?
            .map_err(|e| {
                Reject::new(
                    ErrorCode::LengthMismatch,
                    format!("body stream failed at {got} of {size} bytes: {e}"),
                )
            })?;
        match chunk {
            Some(c) => {
                got += c.bytes.len() as u64;
                if got > size {
                    return Err(Reject::new(
                        ErrorCode::LengthMismatch,
                        format!("body longer than {size} bytes"),
                    ));
                }
                let out = if run.is_empty() && c.bytes.len() >= COALESCE {
                    c.bytes
                } else {
                    if run.capacity() == 0 {
                        run.reserve(COALESCE.min(size as usize));
                    }
                    run.extend_from_slice(&c.bytes);
                    if run.len() < COALESCE {
                        continue;
                    }
                    run.split().freeze()
                };
                if tx.send(out).await.is_err() {
                    return Ok(Pumped::WorkerGone);
                }
            }
            None if got == size => {
                if !run.is_empty() && tx.send(run.split().freeze()).await.is_err() {
                    return Ok(Pumped::WorkerGone);
                }
                return Ok(Pumped::Done);
            }
            None => {
                return Err(Reject::new(
                    ErrorCode::LengthMismatch,
                    format!("body ended after {got} of {size} bytes"),
                ));
            }
        }
    }
}

/// Receives shard `id`'s `size`-byte body and checks it hashes to `id`.
pub(crate) async fn receive(
    st: &Arc<State>,
    id: ShardId,
    size: u64,
    recv: &mut RecvStream,
) -> Result<Received, Reject> {
    let read_timeout = st.read_timeout();
    let allowance = Duration::from_secs_f64(size as f64 / st.config.limits.min_upload_rate as f64);
    let deadline = Instant::now() + read_timeout + allowance;

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let blobs = Arc::clone(&st.blobs);
    let worker = tokio::task::spawn_blocking(move || -> io::Result<Received> {
        let (staged, file) = blobs.begin(&id)?;
        let mut reader = ChannelReader {
            rx,
            cur: Bytes::new(),
            file,
            written: 0,
            flushed: 0,
        };
        let outboard = verified::outboard(&mut reader, size)?;
        Ok(Received {
            outboard,
            staged,
            file: reader.file,
        })
    });
    let pumped = pump(recv, size, deadline, read_timeout, &tx).await;
    drop(tx);
    let worked = worker
        .await
        .map_err(|e| Reject::internal("upload task failed", e))?;
    let received = match (pumped, worked) {
        // The network side failed: the worker only saw the channel close.
        (Err(rej), _) => return Err(rej),
        (Ok(_), Err(e)) => return Err(e.into()),
        (Ok(Pumped::WorkerGone), Ok(_)) => {
            return Err(Reject::internal("upload", "writer stopped early"));
        }
        (Ok(Pumped::Done), Ok(r)) => r,
    };
    if received.outboard.root != id.hash() {
        return Err(Reject::new(
            ErrorCode::HashMismatch,
            format!(
                "body hashes to {}, not {id}",
                received.outboard.root.to_hex()
            ),
        ));
    }
    Ok(received)
}
