//! The seccomp filter of a supervised program (x86-64 only).
//!
//! - system calls of another ABI (i386 `int 0x80`, x32): EPERM;
//! - `connect` with an address of at least 16 bytes (every AF_INET/AF_INET6 address; shorter
//!   ones are AF_UNIX paths the kernel would refuse for an internet socket): notify;
//! - `getpeername`: notify (answered with the destination for proxied sockets);
//! - `sendto`/`sendmsg` with MSG_FASTOPEN: EOPNOTSUPP (data and SYN would leave directly);
//! - `sendto` with a destination address of at least 16 bytes, `sendmsg`, `sendmmsg`: notify
//!   (a datagram's destination: loopback and direct routes are sent by the supervisor, the
//!   rest refused). A `sendto` address shorter than that is allowed, as a short `connect` is:
//!   every internet socket refuses it (EINVAL; an AF_INET6 datagram socket takes a short
//!   AF_UNSPEC one as no address at all, its connected peer, which only a notified connect
//!   set), so such a call is netlink's (12 bytes: glibc's getaddrinfo asks the kernel for
//!   the interface addresses so each time) or a short AF_UNIX path;
//! - `io_uring_setup`: ENOSYS (io_uring's connect and send bypass the filter);
//! - everything else: allowed.

pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
fn off_arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

pub const NR_CONNECT: i32 = libc::SYS_connect as i32;
pub const NR_GETPEERNAME: i32 = libc::SYS_getpeername as i32;
pub const NR_SENDTO: i32 = libc::SYS_sendto as i32;
pub const NR_SENDMSG: i32 = libc::SYS_sendmsg as i32;
pub const NR_SENDMMSG: i32 = libc::SYS_sendmmsg as i32;
const NR_IO_URING_SETUP: u32 = 425;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program (see the module text). Labels are resolved by hand: every jump is forward.
pub fn program() -> Vec<libc::sock_filter> {
    let allow = stmt(RET_K, RET_ALLOW);
    let notify = stmt(RET_K, RET_USER_NOTIF);
    let eperm = stmt(RET_K, RET_ERRNO | libc::EPERM as u32);
    let enosys = stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32);
    let eopnotsupp = stmt(RET_K, RET_ERRNO | libc::EOPNOTSUPP as u32);
    let fastopen = libc::MSG_FASTOPEN as u32;

    let mut p = vec![
        // 0: arch
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        eperm,
        // 3: number; x32 refused
        stmt(LD_W_ABS, OFF_NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        eperm,
    ];
    // 6: dispatch. Each entry: jeq NR -> its block. Blocks follow the table.
    // Block layout (offsets from the block start):
    //   connect:  ld addrlen; jge 16 -> notify; allow; notify              (4)
    //   sendto:   ld flags; jset FASTOPEN -> eopnotsupp; ld dest lo; jeq 0 ?; ld dest hi;
    //             jeq 0 -> allow; ld addrlen; jge 16 -> notify; notify; allow; eopnotsupp (11)
    //   sendmsg:  ld flags; jset FASTOPEN -> eopnotsupp; notify; eopnotsupp (4)
    let connect_block = vec![
        stmt(LD_W_ABS, off_arg_lo(2)),
        jump(JGE_K, 16, 1, 0),
        allow,
        notify,
    ];
    let sendto_block = vec![
        stmt(LD_W_ABS, off_arg_lo(3)),
        jump(JSET_K, fastopen, 8, 0),
        // A null destination (both halves of the pointer 0): allowed.
        stmt(LD_W_ABS, off_arg_lo(4)),
        jump(JEQ_K, 0, 0, 2),
        stmt(LD_W_ABS, off_arg_hi(4)),
        jump(JEQ_K, 0, 3, 0),
        // A destination: notified if its length is 16 or more (or negative: the kernel
        // refuses that), allowed below that.
        stmt(LD_W_ABS, off_arg_lo(5)),
        jump(JGE_K, 16, 0, 1),
        notify,
        allow,
        eopnotsupp,
    ];
    let sendmsg_block = vec![
        stmt(LD_W_ABS, off_arg_lo(2)),
        jump(JSET_K, fastopen, 1, 0),
        notify,
        eopnotsupp,
    ];
    // Dispatch table: (nr, target) where target is an index into `tails`.
    // Tails after the table: [allow, notify, enosys, connect_block, sendto_block, sendmsg_block]
    let table: [(u32, usize); 6] = [
        (NR_CONNECT as u32, 3),
        (NR_GETPEERNAME as u32, 1),
        (NR_IO_URING_SETUP, 2),
        (NR_SENDTO as u32, 4),
        (NR_SENDMSG as u32, 5),
        (NR_SENDMMSG as u32, 1),
    ];
    let tails: Vec<Vec<libc::sock_filter>> = vec![
        vec![allow],
        vec![notify],
        vec![enosys],
        connect_block,
        sendto_block,
        sendmsg_block,
    ];
    let mut tail_start = Vec::new();
    let mut at = 0usize;
    for t in &tails {
        tail_start.push(at);
        at += t.len();
    }
    let n = table.len();
    for (i, (nr, tail)) in table.iter().enumerate() {
        // From instruction i of the table, the tails begin (n - i - 1) instructions on.
        let skip = n - i - 1 + tail_start[*tail];
        p.push(jump(JEQ_K, *nr, skip as u8, 0));
    }
    // Not in the table: the first tail (allow) follows directly.
    for t in tails {
        p.extend(t);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BPF interpreter for the instructions the program uses.
    fn eval(p: &[libc::sock_filter], data: &[u8; 64]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    let k = i.k as usize;
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                JEQ_K => pc += if a == i.k { i.jt } else { i.jf } as usize,
                JGE_K => pc += if a >= i.k { i.jt } else { i.jf } as usize,
                JSET_K => pc += if a & i.k != 0 { i.jt } else { i.jf } as usize,
                RET_K => return i.k,
                c => panic!("unknown op {c:#x}"),
            }
        }
    }

    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_le_bytes());
        d[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        d
    }

    #[test]
    fn the_filter_says_what_the_module_says() {
        let p = program();
        let x = AUDIT_ARCH_X86_64;
        let ev = |arch, nr: i32, args| eval(&p, &data(arch, nr as u32, args));
        assert_eq!(ev(x, NR_CONNECT, [3, 0x1000, 16, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(ev(x, NR_CONNECT, [3, 0x1000, 28, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(ev(x, NR_CONNECT, [3, 0x1000, 12, 0, 0, 0]), RET_ALLOW);
        assert_eq!(ev(x, NR_GETPEERNAME, [0; 6]), RET_USER_NOTIF);
        assert_eq!(ev(x, 425, [0; 6]), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(ev(x, libc::SYS_read as i32, [0; 6]), RET_ALLOW);
        assert_eq!(ev(x, libc::SYS_execve as i32, [0; 6]), RET_ALLOW);
        // sendto: no destination allowed, a destination notified, FASTOPEN refused.
        assert_eq!(ev(x, NR_SENDTO, [3, 1, 1, 0, 0, 0]), RET_ALLOW);
        assert_eq!(ev(x, NR_SENDTO, [3, 1, 1, 0, 0x1000, 16]), RET_USER_NOTIF);
        assert_eq!(ev(x, NR_SENDTO, [3, 1, 1, 0, 0x1000, 28]), RET_USER_NOTIF);
        assert_eq!(
            ev(x, NR_SENDTO, [3, 1, 1, 0, 0x7f00_0000_0000, 16]),
            RET_USER_NOTIF
        );
        assert_eq!(
            ev(x, NR_SENDTO, [3, 1, 1, 0, 0x7f00_0000_0000, 0]),
            RET_ALLOW
        );
        // Shorter than any internet address (netlink's 12): allowed; negative: notified.
        assert_eq!(ev(x, NR_SENDTO, [3, 1, 1, 0, 0x1000, 12]), RET_ALLOW);
        assert_eq!(ev(x, NR_SENDTO, [3, 1, 1, 0, 0x1000, 15]), RET_ALLOW);
        assert_eq!(
            ev(x, NR_SENDTO, [3, 1, 1, 0, 0x1000, 0xffff_fff0]),
            RET_USER_NOTIF
        );
        // The length's upper half is not the kernel's (socklen_t is 32 bits).
        assert_eq!(
            ev(x, NR_SENDTO, [3, 1, 1, 0, 0x1000, 0x1_0000_0010]),
            RET_USER_NOTIF
        );
        let fo = libc::MSG_FASTOPEN as u64;
        assert_eq!(
            ev(x, NR_SENDTO, [3, 1, 1, fo, 0x1000, 16]),
            RET_ERRNO | libc::EOPNOTSUPP as u32
        );
        assert_eq!(ev(x, NR_SENDMSG, [3, 0x1000, 0, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(
            ev(x, NR_SENDMSG, [3, 0x1000, fo, 0, 0, 0]),
            RET_ERRNO | libc::EOPNOTSUPP as u32
        );
        assert_eq!(ev(x, NR_SENDMMSG, [0; 6]), RET_USER_NOTIF);
        // Other ABIs.
        assert_eq!(ev(0x4000_0003, 102, [0; 6]), RET_ERRNO | libc::EPERM as u32);
        assert_eq!(
            ev(x, 0x4000_0000 + 42, [0; 6]),
            RET_ERRNO | libc::EPERM as u32
        );
    }
}
