//! The caller's terminal: its size, and raw mode while a remote or private terminal is relayed
//! through it (bytes pass as typed; the far side's line discipline interprets them).

use std::io::IsTerminal;

use crate::proto::message::WinSize;

/// The local terminal's size.
pub fn local_winsize() -> Option<WinSize> {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [0, 1, 2] {
        // SAFETY: TIOCGWINSZ writes into `ws`, which lives across the call.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(WinSize {
                rows: ws.ws_row,
                cols: ws.ws_col,
            });
        }
    }
    None
}

/// Puts the local terminal in raw mode while alive.
pub struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Raw mode on stdin if it is a terminal; `None` if it is not (or refuses).
    pub fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = nix::sys::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSADRAIN, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSADRAIN,
            &self.saved,
        );
    }
}

/// Gives the terminal `fd` the size `ws` (its foreground processes get SIGWINCH).
pub fn set_winsize(fd: std::os::fd::RawFd, ws: WinSize) {
    let w = libc::winsize {
        ws_row: ws.rows,
        ws_col: ws.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads `w`, which lives across the call; a bad fd gives EBADF.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &w) };
}
