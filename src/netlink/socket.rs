//! A NETLINK_NETFILTER socket (the only I/O in this module tree).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, getsockname,
    recv, send, setsockopt, sockopt,
};

use super::msg::{Messages, NLMSG_DONE, NLMSG_ERROR};

const SOL_NETLINK: nix::libc::c_int = 270;
const NETLINK_NO_ENOBUFS: nix::libc::c_int = 5;
const NETLINK_CAP_ACK: nix::libc::c_int = 10;
const NETLINK_EXT_ACK: nix::libc::c_int = 11;

/// What went wrong talking to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoError {
    /// A system call failed.
    Sys(Errno),
    /// The kernel answered the request with an error (errno, and the extended-ack
    /// text when it gave one).
    Kernel {
        errno: Errno,
        text: Option<heapless::String<96>>,
    },
    /// The kernel sent something we could not decode.
    Protocol(super::Error),
    /// No answer within the socket's reply timeout.
    Timeout,
}

impl IoError {
    pub fn errno(&self) -> Option<Errno> {
        match self {
            IoError::Sys(e) | IoError::Kernel { errno: e, .. } => Some(*e),
            IoError::Protocol(_) | IoError::Timeout => None,
        }
    }
}

impl core::fmt::Display for IoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IoError::Sys(e) => write!(f, "{e:?} ({})", e.desc()),
            IoError::Kernel { errno, text } => {
                write!(f, "kernel said {errno:?} ({})", errno.desc())?;
                if let Some(t) = text {
                    write!(f, ": {t}")?;
                }
                Ok(())
            }
            IoError::Protocol(e) => write!(f, "{e}"),
            IoError::Timeout => write!(f, "the kernel did not answer in time"),
        }
    }
}

impl From<Errno> for IoError {
    fn from(e: Errno) -> Self {
        IoError::Sys(e)
    }
}

impl From<super::Error> for IoError {
    fn from(e: super::Error) -> Self {
        IoError::Protocol(e)
    }
}

/// What the daemon needs of a netlink socket: sequence numbers, sending a datagram and
/// receiving one. [`Socket`] is the real one; tests put a scripted kernel behind it.
pub trait Link {
    fn next_seq(&mut self) -> u32;
    fn send(&self, bytes: &[u8]) -> Result<(), IoError>;
    /// Receive one datagram; `None` when non-blocking and nothing is waiting. A blocking
    /// receive that waited past the reply timeout is `Err(IoError::Timeout)`.
    fn recv<'b>(&self, buf: &'b mut [u8], nonblocking: bool) -> Result<Option<&'b [u8]>, IoError>;
}

/// Send a request that asked for an ACK and wait for the answer with its sequence
/// number. Anything else that arrives meanwhile is passed to `other` (a dump's
/// messages, or packets queued to a queue socket while it is being configured, which
/// still need a verdict).
pub fn transact(
    link: &dyn Link,
    request: &[u8],
    seq: u32,
    buf: &mut [u8],
    other: &mut dyn FnMut(&super::msg::Message<'_>),
) -> Result<(), IoError> {
    link.send(request)?;
    loop {
        let Some(datagram) = link.recv(buf, false)? else {
            continue;
        };
        for msg in Messages::new(datagram) {
            let msg = msg?;
            if msg.header.kind == NLMSG_ERROR {
                let err = msg.error()?.ok_or(super::Error::Truncated)?;
                if err.seq != seq {
                    continue;
                }
                if err.errno == 0 {
                    return Ok(());
                }
                let text = err.text.map(|t| {
                    let mut s = heapless::String::new();
                    // Truncate long kernel messages rather than fail.
                    for ch in t.chars() {
                        if s.push(ch).is_err() {
                            break;
                        }
                    }
                    s
                });
                return Err(IoError::Kernel {
                    errno: Errno::from_raw(err.errno),
                    text,
                });
            }
            // A dump ends with NLMSG_DONE and gets no separate ACK.
            if msg.header.seq == seq && msg.header.kind == NLMSG_DONE {
                return Ok(());
            }
            other(&msg);
        }
    }
}

/// Send several requests in one datagram (`request`: `outcomes.len()` messages with the
/// sequence numbers `first_seq`, `first_seq + 1`, ...) and wait for their answers. The
/// kernel handles the messages of a datagram in order and answers an error whatever the
/// flags, so only the last request needs NLM_F_ACK: once its answer is in, every earlier
/// one without an error succeeded (one receive instead of one per request; a request
/// that asks for its own ACK is waited for as well). `outcomes[i]` is request i's;
/// `other(i, msg)` sees any other message answering it (a GET's reply). An I/O error or
/// timeout ends the wait and is returned.
pub fn transact_many(
    link: &dyn Link,
    request: &[u8],
    first_seq: u32,
    buf: &mut [u8],
    outcomes: &mut [Option<Result<(), IoError>>],
    other: &mut dyn FnMut(usize, &super::msg::Message<'_>),
) -> Result<(), IoError> {
    let n = outcomes.len();
    if n == 0 {
        return Ok(());
    }
    let index = |seq: u32| {
        let i = seq.wrapping_sub(first_seq) as usize;
        (i < n).then_some(i)
    };
    link.send(request)?;
    let last = n - 1;
    while outcomes.get(last).is_some_and(Option::is_none) {
        let Some(datagram) = link.recv(buf, false)? else {
            continue;
        };
        for msg in Messages::new(datagram) {
            let msg = msg?;
            if msg.header.kind == NLMSG_ERROR {
                let err = msg.error()?.ok_or(super::Error::Truncated)?;
                let Some(slot) = index(err.seq).and_then(|i| outcomes.get_mut(i)) else {
                    continue;
                };
                *slot = Some(if err.errno == 0 {
                    Ok(())
                } else {
                    Err(IoError::Kernel {
                        errno: Errno::from_raw(err.errno),
                        text: None,
                    })
                });
                continue;
            }
            if let Some(i) = index(msg.header.seq) {
                other(i, &msg);
            }
        }
    }
    for o in outcomes.iter_mut().filter(|o| o.is_none()) {
        *o = Some(Ok(()));
    }
    Ok(())
}

pub struct Socket {
    fd: OwnedFd,
    portid: u32,
    seq: u32,
}

/// The only unsafe code of the crate: nix wraps no NETLINK_* socket options (EXT_ACK,
/// CAP_ACK, NO_ENOBUFS), so they are set with libc directly.
#[allow(unsafe_code)]
fn set_int_opt(
    fd: &OwnedFd,
    level: nix::libc::c_int,
    name: nix::libc::c_int,
    value: i32,
) -> Result<(), Errno> {
    // SAFETY: fd is a valid open socket for the duration of the call, and we pass a
    // pointer to a live i32 together with its exact size.
    let rc = unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            core::mem::size_of::<i32>() as nix::libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

impl Socket {
    /// Open and bind a NETLINK_NETFILTER socket. Error-message options are best
    /// effort: older kernels lack them and that is fine.
    pub fn open() -> Result<Socket, IoError> {
        let fd = nix::sys::socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        let addr: NetlinkAddr = getsockname(fd.as_raw_fd())?;
        let _ = set_int_opt(&fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let _ = set_int_opt(&fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
        Ok(Socket {
            fd,
            portid: addr.pid(),
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() as u32),
        })
    }

    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// Ask for a larger receive buffer (forcing it past rmem_max when privileged),
    /// and stop the kernel reporting ENOBUFS: a queue overrun is visible in
    /// /proc/net/netfilter/nfnetlink_queue, and the packets involved are the
    /// kernel's to drop or accept (fail-open), not ours to resynchronise.
    pub fn tune_for_queue(&self, rcvbuf: usize) {
        if setsockopt(&self.fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
            let _ = setsockopt(&self.fd, sockopt::RcvBuf, &rcvbuf);
        }
        let _ = set_int_opt(&self.fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, 1);
    }

    /// Blocking receives (the answers to requests) give up after `timeout` instead of
    /// waiting for ever: a kernel that never answers must not stall the packet path.
    pub fn set_reply_timeout(&self, timeout: std::time::Duration) -> Result<(), IoError> {
        use nix::sys::time::TimeValLike;
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 1000);
        let tv = nix::sys::time::TimeVal::milliseconds(ms);
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv)?;
        Ok(())
    }

    /// [`transact`] on this socket.
    pub fn transact(
        &self,
        request: &[u8],
        seq: u32,
        buf: &mut [u8],
        mut other: impl FnMut(&super::msg::Message<'_>),
    ) -> Result<(), IoError> {
        transact(self, request, seq, buf, &mut other)
    }
}

impl Link for Socket {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), IoError> {
        let n = send(self.fd.as_raw_fd(), bytes, MsgFlags::empty())?;
        if n != bytes.len() {
            return Err(IoError::Sys(Errno::EMSGSIZE));
        }
        Ok(())
    }

    fn recv<'b>(&self, buf: &'b mut [u8], nonblocking: bool) -> Result<Option<&'b [u8]>, IoError> {
        let flags = if nonblocking {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::empty()
        };
        loop {
            match recv(self.fd.as_raw_fd(), buf, flags) {
                Ok(n) => return Ok(Some(&buf[..n.min(buf.len())])),
                Err(Errno::EAGAIN) if nonblocking => return Ok(None),
                // SO_RCVTIMEO ran out (set_reply_timeout).
                Err(Errno::EAGAIN) => return Err(IoError::Timeout),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(IoError::Sys(e)),
            }
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
