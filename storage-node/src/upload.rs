//! Receiving a shard body: streamed into a `tmp/` file and hashed into its bao outboard while it
//! arrives, so that when the last byte lands only the fsyncs and the index write remain.
//!
//! The async side reads QUIC chunks, gathers them into runs (pooled buffers), and hands the runs
//! through a bounded channel to one blocking task. That task writes each run to the file, feeds
//! it to the outboard builder, and starts the kernel's write-back of what it wrote every MiB
//! (Linux `sync_file_range`), so the final fsync has little left to do. The outboard's root is
//! the BLAKE3 hash of the body; the caller compares it with the shard id before anything is
//! renamed into place.

use std::{
    fs::File,
    io::{self, Write},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use granary_protocol::{
    ErrorCode, ShardId,
    verified::{Outboard, OutboardBuilder},
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

/// A run of received bytes on its way to the writer thread: a pooled buffer the pump gathered
/// packet-sized chunks into, or one chunk large enough to pass through uncopied.
enum Run {
    Gathered(Vec<u8>),
    Chunk(Bytes),
}

impl Run {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Gathered(v) => v,
            Self::Chunk(b) => b,
        }
    }
}

/// Received bytes are handed to the writer thread in runs of up to this many (see `pump`).
const COALESCE: usize = 256 << 10;

/// Run buffers shared by every upload on the node, so a run costs neither an allocation nor,
/// once warm, page faults on fresh memory (faulting in a new 256 KiB buffer per run, and
/// regrowing it, took about a tenth of a node's CPU during a put).
#[derive(Debug)]
pub(crate) struct RunPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl RunPool {
    /// A pool that keeps at most `keep` idle buffers (`keep * COALESCE` bytes).
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    fn take(&self) -> Vec<u8> {
        let pooled = self.free.lock().ok().and_then(|mut f| f.pop());
        pooled.unwrap_or_else(|| Vec::with_capacity(COALESCE))
    }

    fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut f) = self.free.lock()
            && f.len() < self.keep
        {
            f.push(buf);
        }
    }
}

/// Writes the runs of a receive to its staged file as they arrive, starting the kernel's
/// write-back every [`WRITEBACK_STEP`] bytes (the worker hashes each run from the same buffer).
struct RunWriter {
    file: File,
    written: u64,
    flushed: u64,
}

/// Start write-back every this many bytes, so the final fsync has little left to do.
const WRITEBACK_STEP: u64 = 1 << 20;

impl RunWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
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
        Ok(())
    }
}

enum Pumped {
    Done,
    WorkerGone,
}

/// Reads exactly `size` bytes then the end of the stream, by `deadline`, each read within
/// `read_timeout`, forwarding runs to `tx`.
async fn pump(
    recv: &mut RecvStream,
    size: u64,
    deadline: Instant,
    read_timeout: Duration,
    pool: &RunPool,
    tx: &mpsc::Sender<Run>,
) -> Result<Pumped, Reject> {
    let mut got = 0u64;
    // QUIC hands the body over in packet-sized chunks (about 1.2-1.5 KB). Passing each to the
    // writer thread would cost a wake-up and a `write(2)` per packet; they are gathered into
    // runs of up to `COALESCE` bytes first (a chunk at least that large passes through
    // uncopied). A run is sent before a chunk would overflow it, so it never regrows.
    let mut run: Vec<u8> = Vec::new();
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
        let Some(c) = chunk else {
            if got != size {
                return Err(Reject::new(
                    ErrorCode::LengthMismatch,
                    format!("body ended after {got} of {size} bytes"),
                ));
            }
            if !run.is_empty() && tx.send(Run::Gathered(run)).await.is_err() {
                return Ok(Pumped::WorkerGone);
            }
            return Ok(Pumped::Done);
        };
        got += c.bytes.len() as u64;
        if got > size {
            return Err(Reject::new(
                ErrorCode::LengthMismatch,
                format!("body longer than {size} bytes"),
            ));
        }
        if !run.is_empty() && run.len() + c.bytes.len() > COALESCE {
            let full = std::mem::take(&mut run);
            if tx.send(Run::Gathered(full)).await.is_err() {
                return Ok(Pumped::WorkerGone);
            }
        }
        if run.is_empty() && c.bytes.len() >= COALESCE {
            if tx.send(Run::Chunk(c.bytes)).await.is_err() {
                return Ok(Pumped::WorkerGone);
            }
            continue;
        }
        if run.capacity() == 0 {
            run = pool.take();
        }
        run.extend_from_slice(&c.bytes);
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

    let (tx, mut rx) = mpsc::channel::<Run>(16);
    let blobs = Arc::clone(&st.blobs);
    let pool = Arc::clone(&st.upload_runs);
    let worker = tokio::task::spawn_blocking(move || -> io::Result<Received> {
        let (staged, file) = blobs.begin(&id)?;
        let mut writer = RunWriter {
            file,
            written: 0,
            flushed: 0,
        };
        let mut outboard = OutboardBuilder::new(size);
        while let Some(run) = rx.blocking_recv() {
            writer.write(run.bytes())?;
            outboard.push(run.bytes())?;
            if let Run::Gathered(v) = run {
                pool.give(v);
            }
        }
        Ok(Received {
            outboard: outboard.finish()?,
            staged,
            file: writer.file,
        })
    });
    let pumped = pump(recv, size, deadline, read_timeout, &st.upload_runs, &tx).await;
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
