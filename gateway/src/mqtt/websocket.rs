//! MQTT over WebSocket: the MQTT byte stream travels in binary frames. A duplex pipe turns
//! the frames back into a stream, so the connection handler is the same as over TCP.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use crate::server::Ctx;

/// Bytes buffered between the WebSocket and the MQTT connection, each way.
const PIPE: usize = 256 << 10;

pub async fn serve<S>(ctx: Arc<Ctx>, io: S, peer: std::net::SocketAddr, cancel: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut ws_out, mut ws_in) = ws.split();
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let accepted = crate::server::Accepted {
        peer,
        listener: 0,
        principal: None,
        sasl: false,
    };
    let conn = tokio::spawn(super::conn::serve_stream(ctx, theirs, accepted, cancel));
    let (mut from_conn, mut to_conn) = tokio::io::split(ours);
    let inbound = async move {
        while let Some(msg) = ws_in.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if to_conn.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                // MQTT travels in binary frames only ([MQTT-6.0.0-1]); pings are answered
                // by the WebSocket layer.
                Ok(Message::Text(_)) => break,
                Ok(_) => {}
            }
        }
        let _ = to_conn.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from_conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
                    if ws_out.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_out.close().await;
    };
    // When the connection ends, so does the WebSocket (even if the peer never closes it);
    // when the peer goes first, the connection's last bytes still go out.
    tokio::pin!(inbound, outbound);
    tokio::select! {
        _ = &mut outbound => {}
        _ = &mut inbound => outbound.await,
    }
    let _ = conn.await;
}
