//! The binaries' standard output. std's `println!` panics once the reader
//! has gone (`rolloutctl replay … | head`, `rolloutd demo | head`); the
//! `println!` and `print!` exported here (`use rollout_api::{print,
//! println};`) end the process quietly instead, as a command cut short by
//! its reader does.

use std::io::Write;

/// Writes to stdout and flushes. When the reader has gone (a broken pipe)
/// the process exits with 0 at once; any other failure to write exits
/// with 1 and says why on stderr.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`write`].
#[macro_export]
macro_rules! println {
    () => {
        $crate::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`write`].
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}
