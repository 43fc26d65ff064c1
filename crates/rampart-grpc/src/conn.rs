//! Connections handed to tonic: plain TCP or TLS, each carrying its [`Peer`] (address and verified client
//! certificate), which tonic copies into every request's extensions.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rampart_tls::Peer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

/// A connection and its client.
pub struct GrpcConn<IO> {
    io: IO,
    peer: Peer,
}

impl GrpcConn<TcpStream> {
    /// A plain TCP connection (with Nagle's algorithm off, as for TLS connections).
    pub fn plain(io: TcpStream) -> io::Result<Self> {
        let addr = io.peer_addr()?;
        let _ = io.set_nodelay(true);
        Ok(GrpcConn { io, peer: addr.into() })
    }
}

impl<IO> GrpcConn<IO> {
    /// A connection whose TLS handshake has completed, with the peer `accept_tls` reported.
    pub fn tls(io: IO, peer: Peer) -> Self {
        GrpcConn { io, peer }
    }
}

impl<IO> Connected for GrpcConn<IO> {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for GrpcConn<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for GrpcConn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
