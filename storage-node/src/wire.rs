//! Reading and writing frames on quinn streams, with timeouts.

use std::time::Duration;

use granary_protocol::{
    ErrorCode, Message,
    frame::{FrameError, FrameHeader, HEADER_LEN, MAX_FRAME},
    message::ErrorMsg,
};
use quinn::{ReadExactError, RecvStream, SendStream};
use tokio::time::timeout;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ReadError {
    #[error("peer too slow")]
    Timeout,
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("stream: {0}")]
    Stream(#[from] quinn::ReadError),
}

impl ReadError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Self::Timeout => ErrorCode::Timeout,
            Self::Frame(e) => e.code(),
            Self::Truncated | Self::Stream(_) => ErrorCode::Malformed,
        }
    }
}

async fn read_exact(
    recv: &mut RecvStream,
    buf: &mut [u8],
    limit: Duration,
) -> Result<(), ReadError> {
    match timeout(limit, recv.read_exact(buf)).await {
        Err(_) => Err(ReadError::Timeout),
        Ok(Ok(())) => Ok(()),
        Ok(Err(ReadExactError::FinishedEarly(_))) => Err(ReadError::Truncated),
        Ok(Err(ReadExactError::ReadError(e))) => Err(ReadError::Stream(e)),
    }
}

/// Reads one frame; the header and each read of the body must arrive within `limit`, the whole
/// frame within twice that. The
/// length is checked against [`MAX_FRAME`] before any body byte is buffered.
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    limit: Duration,
) -> Result<Message, ReadError> {
    // Dribbling a byte just inside each read timeout does not buy more than twice the limit.
    let deadline = tokio::time::Instant::now() + 2 * limit;
    let mut head = [0u8; HEADER_LEN];
    read_exact(recv, &mut head, limit).await?;
    let h = FrameHeader::decode(&head, MAX_FRAME)?;
    // Grow the buffer as bytes arrive: a peer that declares 1 MiB and sends nothing costs
    // nothing (streams × connections × MAX_FRAME would otherwise be reservable for free).
    let want = h.body_len as usize;
    let mut body = Vec::with_capacity(want.min(64 * 1024));
    while body.len() < want {
        let until = deadline.min(tokio::time::Instant::now() + limit);
        let chunk = tokio::time::timeout_at(until, recv.read_chunk(want - body.len(), true))
            .await
            .map_err(|_| ReadError::Timeout)??
            .ok_or(ReadError::Truncated)?;
        body.extend_from_slice(&chunk.bytes);
    }
    Ok(Message::decode_body(h.msg_type, &body)?)
}

/// Why writing failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("peer too slow to read")]
    Timeout,
    #[error("encoding: {0}")]
    Encode(#[from] granary_protocol::message::EncodeError),
    #[error("stream: {0}")]
    Stream(#[from] quinn::WriteError),
}

/// Writes a frame and an optional raw body, within `limit`.
pub(crate) async fn write_message(
    send: &mut SendStream,
    msg: &Message,
    body: Option<bytes::Bytes>,
    limit: Duration,
) -> Result<(), WriteError> {
    let frame = bytes::Bytes::from(msg.to_frame()?);
    let fut = async {
        match body {
            Some(b) => send.write_all_chunks(&mut [frame, b]).await,
            None => send.write_all(&frame).await,
        }
    };
    timeout(limit, fut)
        .await
        .map_err(|_| WriteError::Timeout)??;
    Ok(())
}

/// Writes an `Error` frame (best effort).
pub(crate) async fn write_error(
    send: &mut SendStream,
    code: ErrorCode,
    detail: String,
    limit: Duration,
) {
    let msg = Message::Error(ErrorMsg::new(code, detail));
    if let Err(e) = write_message(send, &msg, None, limit).await {
        tracing::debug!(%e, "could not send error response");
    }
}
