//! Frame I/O on quinn streams (the client side).

use granary_protocol::{
    Message,
    frame::{FrameHeader, HEADER_LEN, MAX_FRAME},
};
use quinn::{ReadExactError, RecvStream};

use super::error::{RemoteError, RequestError};

pub(crate) async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), RequestError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(ReadExactError::FinishedEarly(n)) => Err(RequestError::Protocol(format!(
            "stream ended after {n} of {} bytes",
            buf.len()
        ))),
        Err(ReadExactError::ReadError(e)) => Err(e.into()),
    }
}

/// Reads one response frame; an `Error` frame becomes [`RequestError::Rejected`].
pub(crate) async fn read_response(recv: &mut RecvStream) -> Result<Message, RequestError> {
    let mut head = [0u8; HEADER_LEN];
    read_exact(recv, &mut head).await?;
    let h =
        FrameHeader::decode(&head, MAX_FRAME).map_err(|e| RequestError::Protocol(e.to_string()))?;
    let mut body = vec![0u8; h.body_len as usize];
    read_exact(recv, &mut body).await?;
    match Message::decode_body(h.msg_type, &body)
        .map_err(|e| RequestError::Protocol(e.to_string()))?
    {
        Message::Error(e) => Err(RemoteError {
            raw: e.code,
            detail: e.detail,
        }
        .into()),
        m => Ok(m),
    }
}

pub(crate) fn unexpected(m: &Message) -> RequestError {
    RequestError::Protocol(format!("unexpected {:?} response", m.msg_type()))
}
