//! Messages between the server and a worker: one JSON header per datagram on `SOCK_SEQPACKET` Unix socket
//! pairs (`worker.rs`: the work socket and the events socket), and the tensors in an anonymous memory file (memfd) passed with it.
//!
//! Tensors that fit in the datagram with the header travel inline, after a newline (at most [`MAX_INLINE`]
//! bytes in all). Larger ones: the sender writes every tensor into a fresh memfd at 64-byte aligned offsets, seals it against writing,
//! growing and shrinking, and passes the descriptor (`SCM_RIGHTS`). The receiver checks the seals before it
//! maps the file, so the bytes it validated cannot change under it. No file has a name anything else could
//! open: there is nothing in `/dev/shm` for a client to register (the shared-memory chain of
//! CVE-2025-23319/23320/23334 has no target). A header larger than [`MAX_INLINE`] travels in the memfd too,
//! after the tensors.
//!
//! This module and `spawn.rs` are the crate's only `unsafe` code: taking ownership of a received descriptor
//! and mapping a sealed file.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use rampart_types::{DataType, Error, Result, Tensor};
use serde_json::{Value, json};

/// The largest datagram either side reads.
pub(crate) const MAX_DATAGRAM: usize = 65536;
/// Headers above this size travel in the memfd.
pub(crate) const MAX_INLINE: usize = 32768;
const ALIGN: u64 = 64;

fn align(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

fn seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

fn io_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!("python worker channel: {what}: {e}"))
}

/// Lays `parts` out at aligned offsets; returns each part's (offset, length) and the total size.
pub(crate) fn layout(parts: &[&[u8]]) -> (Vec<(u64, u64)>, u64) {
    let mut at = 0;
    let places = parts
        .iter()
        .map(|p| {
            let place = (at, p.len() as u64);
            at = align(at + p.len() as u64);
            place
        })
        .collect();
    (places, at)
}

/// A sealed memfd holding `parts` as [`layout`] places them.
fn sealed_file(parts: &[&[u8]]) -> Result<OwnedFd> {
    let (places, total) = layout(parts);
    let fd = memfd_create(c"rampart-tensors", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| io_error("memfd_create", e))?;
    let file = File::from(fd);
    file.set_len(total).map_err(|e| io_error("sizing the tensor file", e))?;
    for (p, (at, _)) in parts.iter().zip(places) {
        file.write_all_at(p, at).map_err(|e| io_error("writing tensors", e))?;
    }
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals())).map_err(|e| io_error("sealing", e))?;
    Ok(OwnedFd::from(file))
}

/// Sends `header`, with `parts` (placed as [`layout`] says; the caller wrote the offsets into the header)
/// in one sealed memfd.
pub(crate) fn send(sock: &OwnedFd, header: &Value, parts: &[&[u8]]) -> Result<()> {
    let mut text = header.to_string().into_bytes();
    let (places, total) = layout(parts);
    if total > 0 && text.len() as u64 + 1 + total <= MAX_INLINE as u64 {
        // Small tensors travel in the datagram, after the header and a newline (compact JSON has none).
        text.push(b'\n');
        let base = text.len();
        text.resize(base + total as usize, 0);
        for (p, (at, _)) in parts.iter().zip(places) {
            text[base + at as usize..][..p.len()].copy_from_slice(p);
        }
        return datagram(sock, &text, None);
    }
    let spilled = text.len() > MAX_INLINE;
    let mut all = parts.to_vec();
    if spilled {
        all.push(&text);
    }
    let fd = if all.iter().any(|p| !p.is_empty()) { Some(sealed_file(&all)?) } else { None };
    if !spilled {
        return datagram(sock, &text, fd.as_ref());
    }
    let (places, _) = layout(&all);
    let (at, len) = places[places.len() - 1];
    let pointer = json!({"op": "spilled", "at": at, "len": len}).to_string().into_bytes();
    datagram(sock, &pointer, fd.as_ref())
}

/// Sends one datagram, with `fd` attached when there is one.
fn datagram(sock: &OwnedFd, bytes: &[u8], fd: Option<&OwnedFd>) -> Result<()> {
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage> =
        if fds.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&fds)] };
    sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(bytes)], &cmsgs, MsgFlags::empty(), None)
        .map_err(|e| io_error("send", e))?;
    Ok(())
}

/// One message from the worker: its header and the memfd it came with, mapped.
pub(crate) struct Message {
    pub header: Value,
    pub data: Bytes,
}

/// Receives the next message; `Ok(None)` when the worker closed its end.
pub(crate) fn receive(sock: &OwnedFd) -> Result<Option<Message>> {
    // One buffer per thread, reused: a fresh 64 KiB buffer per message costs more than the message.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_DATAGRAM]);
    }
    BUF.with_borrow_mut(|buf| receive_into(sock, buf))
}

fn receive_into(sock: &OwnedFd, buf: &mut [u8]) -> Result<Option<Message>> {
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (len, flags, fds) = {
        let mut iov = [IoSliceMut::new(buf)];
        let msg =
            recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(|e| io_error("receive", e))?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|e| io_error("receive", e))? {
            if let ControlMessageOwned::ScmRights(received) = c {
                for fd in received {
                    // SAFETY: the kernel has just installed `fd` in this process's table for this message;
                    // nothing else refers to it, so it is ours to own and close.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, msg.flags, fds)
    };
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err(Error::internal("python worker sent a message larger than the channel allows"));
    }
    if len == 0 {
        return Ok(None);
    }
    let mut text = &buf[..len];
    let data = match fds.into_iter().next() {
        Some(fd) => map_sealed(fd)?,
        // Small tensors come inline, after the header and a newline.
        None => match text.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                let data = Bytes::copy_from_slice(&text[nl + 1..]);
                text = &text[..nl];
                data
            }
            None => Bytes::new(),
        },
    };
    let mut header: Value = serde_json::from_slice(text)
        .map_err(|e| Error::internal(format!("python worker sent an unreadable message: {e}")))?;
    if header["op"] == "spilled" {
        let at = header["at"].as_u64().unwrap_or(u64::MAX);
        let n = header["len"].as_u64().unwrap_or(u64::MAX);
        let part = slice(&data, at, n)?;
        header = serde_json::from_slice(&part).map_err(|e| {
            Error::internal(format!("python worker sent an unreadable message: {e}"))
        })?;
    }
    Ok(Some(Message { header, data }))
}

/// Maps a memfd the worker sealed. A file that is not sealed against writing and resizing is refused:
/// its bytes could change after they were checked.
fn map_sealed(fd: OwnedFd) -> Result<Bytes> {
    let file = File::from(fd);
    let sealed = fcntl(&file, FcntlArg::F_GET_SEALS).map_err(|e| io_error("reading seals", e))?;
    let want = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
    if !SealFlag::from_bits_truncate(sealed).contains(want) {
        return Err(Error::internal("python worker sent tensors in a file that is not sealed"));
    }
    let size = file.metadata().map_err(|e| io_error("tensor file size", e))?.len();
    if size == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the file is an anonymous memfd sealed against writes, growing and shrinking (checked above),
    // so no process can change or truncate the mapped bytes while the mapping lives.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error("mapping tensors", e))?;
    Ok(Bytes::from_owner(map))
}

/// `data[at..at + len]`, or an error naming the bad place.
pub(crate) fn slice(data: &Bytes, at: u64, len: u64) -> Result<Bytes> {
    let end = at.checked_add(len).filter(|&e| e <= data.len() as u64);
    match end {
        Some(end) => Ok(data.slice(at as usize..end as usize)),
        None => Err(Error::internal(format!(
            "python worker placed a tensor at {at}+{len}, outside its {} byte file",
            data.len()
        ))),
    }
}

/// A tensor's description in a header, for `at` in the message's memfd.
pub(crate) fn describe(t: &Tensor, at: u64) -> Value {
    json!({
        "name": t.name,
        "datatype": t.datatype.as_str(),
        "shape": t.shape,
        "at": at,
        "len": t.data.len(),
    })
}

/// A tensor the worker described, its bytes taken from `data` and checked against its type and shape
/// (`model` names the worker in errors).
pub(crate) fn tensor(desc: &Value, data: &Bytes, model: &str) -> Result<Tensor> {
    let bad = |what: &str| Error::internal(format!("{model} sent a tensor with {what}"));
    let name = desc["name"].as_str().ok_or_else(|| bad("no name"))?;
    let datatype = desc["datatype"]
        .as_str()
        .and_then(DataType::from_protocol)
        .ok_or_else(|| bad("an unknown data type"))?;
    let shape: Vec<i64> = desc["shape"]
        .as_array()
        .ok_or_else(|| bad("no shape"))?
        .iter()
        .map(|d| d.as_i64().filter(|&d| d >= 0))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("a bad shape"))?;
    let (at, len) = (desc["at"].as_u64().unwrap_or(0), desc["len"].as_u64().unwrap_or(0));
    let bytes = if len == 0 { Bytes::new() } else { slice(data, at, len)? };
    let count = rampart_types::tensor::element_count(&shape, name, Some(model))?;
    match datatype.element_size() {
        Some(size) if (size as u64).checked_mul(count) != Some(len) => {
            return Err(Error::internal(format!(
                "{model} sent tensor '{name}' with {len} bytes for {count} {} elements",
                datatype.as_str()
            )));
        }
        Some(_) => {}
        None => {
            rampart_types::tensor::split_bytes_elements(&bytes, count, name)?;
        }
    }
    Ok(Tensor::new(name, datatype, shape, bytes))
}

/// An error for the worker (`{"message", "code"}`, Triton's code names).
pub(crate) fn error_json(e: &Error) -> Value {
    use rampart_types::Code;
    let code = match e.code() {
        Code::Unknown => "UNKNOWN",
        Code::NotFound => "NOT_FOUND",
        Code::InvalidArg => "INVALID_ARG",
        Code::Unavailable | Code::ResourceExhausted => "UNAVAILABLE",
        Code::Unsupported => "UNSUPPORTED",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::Cancelled => "CANCELLED",
        _ => "INTERNAL",
    };
    json!({"message": e.message(), "code": code})
}

/// The error a worker reported (`{"message", "code"}`) with Triton's code names.
pub(crate) fn error(v: &Value) -> Error {
    use rampart_types::Code;
    let code = match v["code"].as_str().unwrap_or("INTERNAL") {
        "UNKNOWN" => Code::Unknown,
        "NOT_FOUND" => Code::NotFound,
        "INVALID_ARG" => Code::InvalidArg,
        "UNAVAILABLE" => Code::Unavailable,
        "UNSUPPORTED" => Code::Unsupported,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "CANCELLED" => Code::Cancelled,
        _ => Code::Internal,
    };
    Error::new(code, v["message"].as_str().unwrap_or("the python model failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_aligns_every_part() {
        let (places, total) = layout(&[b"abc", b"", &[0u8; 65]]);
        assert_eq!(places, vec![(0, 3), (64, 0), (64, 65)]);
        assert_eq!(total, 192);
    }

    #[test]
    fn tensors_are_checked_against_type_shape_and_file() {
        let data = Bytes::from(vec![1u8; 64]);
        let ok = json!({"name": "y", "datatype": "INT32", "shape": [2, 2], "at": 0, "len": 16});
        let t = tensor(&ok, &data, "m").unwrap();
        assert_eq!((t.shape.clone(), t.data.len()), (vec![2, 2], 16));
        let short = json!({"name": "y", "datatype": "INT32", "shape": [2, 2], "at": 0, "len": 12});
        assert!(tensor(&short, &data, "m").unwrap_err().message().contains("12 bytes for 4 INT32"));
        let outside = json!({"name": "y", "datatype": "INT32", "shape": [4], "at": 60, "len": 16});
        assert!(
            tensor(&outside, &data, "m")
                .unwrap_err()
                .message()
                .contains("outside its 64 byte file")
        );
        let negative = json!({"name": "y", "datatype": "INT32", "shape": [-1], "at": 0, "len": 4});
        assert!(tensor(&negative, &data, "m").unwrap_err().message().contains("a bad shape"));
        let bytes = json!({"name": "s", "datatype": "BYTES", "shape": [1], "at": 0, "len": 8});
        assert!(tensor(&bytes, &data, "m").is_err(), "a length prefix past the end is refused");
    }

    #[test]
    fn small_tensors_travel_inline_and_large_ones_in_a_sealed_file() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .unwrap();
        for size in [16usize, 40_000] {
            let payload = vec![7u8; size];
            send(&a, &json!({"op": "x", "n": size}), &[b"ab", &payload]).unwrap();
            let m = receive(&b).unwrap().unwrap();
            assert_eq!(m.header["n"], size);
            assert_eq!(&m.data[..2], b"ab");
            assert_eq!(&m.data[64..64 + size], &payload[..]);
        }
    }

    #[test]
    fn error_codes_round_trip() {
        for code in [
            rampart_types::Code::InvalidArg,
            rampart_types::Code::NotFound,
            rampart_types::Code::Internal,
        ] {
            let e = Error::new(code, "x");
            assert_eq!(error(&error_json(&e)).code(), code);
        }
    }

    #[test]
    fn a_sealed_file_round_trips_and_an_unsealed_one_is_refused() {
        let fd = sealed_file(&[b"hello", b"world"]).unwrap();
        let data = map_sealed(fd).unwrap();
        assert_eq!(&data[..5], b"hello");
        assert_eq!(&data[64..69], b"world");
        let plain = memfd_create(c"plain", MFdFlags::MFD_CLOEXEC).unwrap();
        let file = File::from(plain);
        file.set_len(8).unwrap();
        let e = map_sealed(OwnedFd::from(file)).unwrap_err();
        assert!(e.message().contains("not sealed"), "{}", e.message());
    }
}
