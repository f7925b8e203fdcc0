//! The small amount of bpf(2) tasd and its tests need, done by hand (no
//! libbpf): an instruction encoder, maps (create, update, lookup), program
//! loading with the verifier's log in the error, pinning, and XDP links.
//! Programs are written as instruction arrays next to their users (the
//! AF_XDP redirect program in [`redirect_program`], test classifiers in the
//! system tests).

use crate::NicError;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

// bpf commands, map/program/attach types (linux/bpf.h).
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_OBJ_PIN: libc::c_int = 6;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_LINK_CREATE: libc::c_int = 28;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// Attach type of XDP programs (also their expected attach type).
pub const BPF_XDP: u32 = 37;

/// XDP attach flags (linux/if_link.h).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

// Instruction classes and fields (linux/bpf_common.h, linux/bpf.h).
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ALU64: u8 = 0x07;
const BPF_JMP: u8 = 0x05;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_MOV: u8 = 0xb0;
const BPF_K: u8 = 0x00;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
/// `src` of a `ld_imm64` whose immediate is a map fd.
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
/// offsetof(struct xdp_md, rx_queue_index).
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst_reg:4 and src_reg:4 bitfields.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}
const _: () = assert!(std::mem::size_of::<Insn>() == 8);

/// One instruction: opcode, destination and source registers, offset,
/// immediate (as `llvm-objdump` shows them).
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    // C bitfields are allocated from the low bits on little-endian targets
    // and from the high bits on big-endian ones.
    let regs = if cfg!(target_endian = "little") {
        (src << 4) | dst
    } else {
        (dst << 4) | src
    };
    Insn {
        code,
        regs,
        off,
        imm,
    }
}

/// The XDP program, with the XSKMAP's fd patched in:
///
/// ```text
/// r2 = *(u32 *)(r1 + 16)      ; key = ctx->rx_queue_index
/// r1 = map_fd ll              ; the XSKMAP (two-slot ld_imm64)
/// r3 = XDP_PASS               ; verdict if the queue has no socket
/// call bpf_redirect_map       ; every frame (ARP too) goes to the socket
/// exit
/// ```
pub fn redirect_program(map_fd: i32) -> [Insn; 6] {
    [
        insn(BPF_LDX | BPF_MEM | BPF_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        insn(BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, XDP_PASS),
        insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    ]
}

/// The TCP ports the shared-mode program steers to AF_XDP: an array of
/// 65,536 one-byte flags indexed by local port (host order), written by the
/// slow path as apps listen and stop listening.
pub const PORTS_MAP_ENTRIES: u32 = 65536;

/// A tiny assembler with labels for the shared-mode program.
struct Asm {
    ins: Vec<Insn>,
    fix: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn new() -> Asm {
        Asm {
            ins: Vec::new(),
            fix: Vec::new(),
            labels: Vec::new(),
        }
    }
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        self.ins.push(insn(code, dst, src, off, imm));
        self
    }
    /// A conditional or unconditional jump to `to`.
    fn jmp(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: &'static str) -> &mut Self {
        self.fix.push((self.ins.len(), to));
        self.op(code, dst, src, 0, imm)
    }
    /// `dst = map_fd ll` (two slots).
    fn ld_map(&mut self, dst: u8, fd: i32) -> &mut Self {
        self.op(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd)
            .op(0, 0, 0, 0, 0)
    }
    fn label(&mut self, l: &'static str) -> &mut Self {
        self.labels.push((l, self.ins.len()));
        self
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, l) in std::mem::take(&mut self.fix) {
            let to = self
                .labels
                .iter()
                .find(|(n, _)| *n == l)
                .map(|(_, i)| *i)
                .expect("label defined");
            self.ins[at].off = (to as isize - at as isize - 1) as i16;
        }
        self.ins
    }
}

// Opcodes the shared program adds (linux/bpf.h).
const BPF_ALU: u8 = 0x04;
const BPF_STX: u8 = 0x03;
const BPF_B: u8 = 0x10;
const BPF_H: u8 = 0x08;
const BPF_X: u8 = 0x08;
const BPF_ADD: u8 = 0x00;
const BPF_END: u8 = 0xd0;
const BPF_TO_BE: u8 = 0x08;
const BPF_JA: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JGT: u8 = 0x20;
const BPF_JNE: u8 = 0x50;
const BPF_JLT: u8 = 0xa0;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;

/// The shared-mode XDP program: a frame goes to the queue's AF_XDP socket
/// only when it is IPv4 (no options) to `ip` (host order) and either TCP
/// with a destination port inside `[lo, hi]` (TAS's active opens) or
/// flagged in the ports map (TAS's listeners), or an ICMP error
/// (destination unreachable, time exceeded) quoting a TCP segment from
/// `ip` whose source port is such a port (path MTU and failed opens of
/// TAS's connections); everything else — ARP, other ICMP, other ports,
/// UDP, IPv6 — goes on to the kernel (`XDP_PASS`).
///
/// ```text
///     r6 = r1                          ; ctx
///     r2 = ctx->data; r3 = ctx->data_end
///     if r2 + 38 > r3 goto pass        ; Ethernet + IPv4 + TCP ports
///     if eth.type != 0x0800 goto pass
///     if ip.ver_ihl != 0x45 goto pass
///     if ip.dst != ip goto pass
///     if ip.proto == 1 goto icmp
///     if ip.proto != 6 goto pass
///     r5 = tcp.dst
/// port:
///     r5 = be16(r5)
///     if lo <= r5 <= hi goto redirect
///     key = r5; r0 = lookup(ports, &key)
///     if r0 == 0 || *(u8 *)r0 == 0 goto pass
/// redirect:
///     return bpf_redirect_map(xsks, ctx->rx_queue_index, XDP_PASS)
/// icmp:
///     if r2 + 70 > r3 goto pass        ; ICMP header, quoted IPv4 + 8 bytes
///     if icmp.type != 3 && icmp.type != 11 goto pass
///     if quote.ver_ihl != 0x45 || quote.proto != 6 goto pass
///     if quote.src != ip goto pass
///     r5 = quote.tcp.src; goto port
/// pass:
///     return XDP_PASS
/// ```
pub fn shared_program(xsk_fd: i32, ports_fd: i32, ip: u32, lo: u16, hi: u16) -> Vec<Insn> {
    let mut a = Asm::new();
    match_tas_frame(&mut a, (0, 4), ports_fd, ip, lo, hi);
    a.label("redirect")
        .op(BPF_LDX | BPF_MEM | BPF_W, 2, 6, XDP_MD_RX_QUEUE_INDEX, 0)
        .ld_map(1, xsk_fd)
        .op(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, XDP_PASS)
        .op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP)
        .op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
        .label("pass")
        .op(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, XDP_PASS)
        .op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    a.finish()
}

/// offsetof(struct __sk_buff, data) and data_end.
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

/// The kernel-side filter of shared mode over AF_PACKET (a tcx ingress
/// program): the frames [`shared_program`] would take for TAS are dropped
/// before the kernel stack (the AF_PACKET sockets, which see every frame
/// before tc ingress, already have their copy); the rest go on.
pub fn tc_drop_program(ports_fd: i32, ip: u32, lo: u16, hi: u16) -> Vec<Insn> {
    let mut a = Asm::new();
    match_tas_frame(&mut a, (SKB_DATA, SKB_DATA_END), ports_fd, ip, lo, hi);
    a.label("redirect")
        .op(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, TC_ACT_SHOT)
        .op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
        .label("pass")
        .op(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, TC_ACT_OK)
        .op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    a.finish()
}

/// The match of the shared-mode programs: jumps to `redirect` for a TAS
/// frame, to `pass` otherwise; r6 keeps the context. `data` are the
/// context's offsets of the packet's start and end pointers.
fn match_tas_frame(a: &mut Asm, data: (i16, i16), ports_fd: i32, ip: u32, lo: u16, hi: u16) {
    let ld = |size: u8| BPF_LDX | BPF_MEM | size;
    let ip_ne = u32::from_ne_bytes(ip.to_be_bytes()) as i32;
    a.op(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0)
        .op(ld(BPF_W), 2, 1, data.0, 0)
        .op(ld(BPF_W), 3, 1, data.1, 0)
        .op(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0)
        .op(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 38)
        .jmp(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 0, "pass")
        .op(ld(BPF_H), 5, 2, 12, 0)
        .jmp(
            BPF_JMP | BPF_JNE | BPF_K,
            5,
            0,
            i32::from(u16::from_ne_bytes([0x08, 0x00])),
            "pass",
        )
        .op(ld(BPF_B), 5, 2, 14, 0)
        .jmp(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 0x45, "pass")
        .op(ld(BPF_W), 5, 2, 30, 0)
        // w4 = the address as the loads read it (zero-extended).
        .op(BPF_ALU | BPF_MOV | BPF_K, 4, 0, 0, ip_ne)
        .jmp(BPF_JMP | BPF_JNE | BPF_X, 5, 4, 0, "pass")
        .op(ld(BPF_B), 5, 2, 23, 0)
        .jmp(BPF_JMP | BPF_JEQ | BPF_K, 5, 0, 1, "icmp")
        .jmp(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 6, "pass")
        .op(ld(BPF_H), 5, 2, 36, 0)
        .label("port")
        .op(BPF_ALU | BPF_END | BPF_TO_BE, 5, 0, 0, 16)
        .jmp(BPF_JMP | BPF_JLT | BPF_K, 5, 0, i32::from(lo), "lookup")
        .jmp(BPF_JMP | BPF_JGT | BPF_K, 5, 0, i32::from(hi), "lookup")
        .jmp(BPF_JMP | BPF_JA, 0, 0, 0, "redirect")
        .label("lookup")
        .op(BPF_STX | BPF_MEM | BPF_W, 10, 5, -4, 0)
        .op(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0)
        .op(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4)
        .ld_map(1, ports_fd)
        .op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM)
        .jmp(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 0, "pass")
        .op(ld(BPF_B), 1, 0, 0, 0)
        .jmp(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0, "pass")
        .jmp(BPF_JMP | BPF_JA, 0, 0, 0, "redirect")
        // An ICMP error quoting one of TAS's segments: 14 Ethernet + 20
        // IPv4 + 8 ICMP + 20 quoted IPv4 + 8 quoted TCP = 70 bytes.
        .label("icmp")
        .op(BPF_ALU64 | BPF_MOV | BPF_X, 4, 2, 0, 0)
        .op(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, 70)
        .jmp(BPF_JMP | BPF_JGT | BPF_X, 4, 3, 0, "pass")
        .op(ld(BPF_B), 5, 2, 34, 0)
        .jmp(BPF_JMP | BPF_JEQ | BPF_K, 5, 0, 3, "icmp_err")
        .jmp(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 11, "pass")
        .label("icmp_err")
        .op(ld(BPF_B), 5, 2, 42, 0)
        .jmp(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 0x45, "pass")
        .op(ld(BPF_B), 5, 2, 51, 0)
        .jmp(BPF_JMP | BPF_JNE | BPF_K, 5, 0, 6, "pass")
        .op(ld(BPF_W), 5, 2, 54, 0)
        .op(BPF_ALU | BPF_MOV | BPF_K, 4, 0, 0, ip_ne)
        .jmp(BPF_JMP | BPF_JNE | BPF_X, 5, 4, 0, "pass")
        .op(ld(BPF_H), 5, 2, 62, 0)
        .jmp(BPF_JMP | BPF_JA, 0, 0, 0, "port");
}

/// Steers listening ports to TAS in shared mode: a handle on the ports map
/// of the shared-mode program (XDP or tc), which it keeps attached while
/// any clone lives. Cheap to clone.
#[derive(Clone)]
pub struct PortSteer {
    map: std::sync::Arc<OwnedFd>,
    /// What must stay open for the map to matter (the tc link and program).
    _keep: std::sync::Arc<Vec<OwnedFd>>,
}

impl PortSteer {
    pub(crate) fn new(map: std::sync::Arc<OwnedFd>, keep: Vec<OwnedFd>) -> PortSteer {
        PortSteer {
            map,
            _keep: std::sync::Arc::new(keep),
        }
    }

    /// Frames to local `port` go to TAS (`on`) or to the kernel.
    pub fn set(&self, port: u16, on: bool) -> Result<(), NicError> {
        map_update(
            self.map.as_fd(),
            &u32::from(port).to_ne_bytes(),
            &[u8::from(on)],
        )
        .map_err(|e| NicError::Os {
            op: "bpf(BPF_MAP_UPDATE_ELEM, ports)",
            source: e,
        })
    }
}

/// Shared mode over AF_PACKET: the tcx ingress filter that keeps TAS's
/// frames from the kernel stack, and the handle on its ports map.
pub fn kernel_filter(ifindex: u32, ip: u32, lo: u16, hi: u16) -> Result<PortSteer, NicError> {
    let ports = create_ports_map()?;
    let (link, prog) = attach_tc_drop(ifindex, &ports, ip, lo, hi)?;
    Ok(PortSteer::new(std::sync::Arc::new(ports), vec![link, prog]))
}

/// The ports map of [`shared_program`].
pub(crate) fn create_ports_map() -> Result<OwnedFd, NicError> {
    map_create(BPF_MAP_TYPE_ARRAY, 4, 1, PORTS_MAP_ENTRIES, "tas_ports")
        .map_err(|e| hint("bpf(BPF_MAP_CREATE, ARRAY)", e))
}

/// Attach type of tcx ingress programs (linux/bpf.h).
pub const BPF_TCX_INGRESS: u32 = 46;

/// Loads [`tc_drop_program`] and attaches it at `ifindex`'s tcx ingress
/// through a BPF link (detached when the returned link fd closes, also
/// when tasd dies: nothing is left behind).
pub(crate) fn attach_tc_drop(
    ifindex: u32,
    ports: &OwnedFd,
    ip: u32,
    lo: u16,
    hi: u16,
) -> Result<(OwnedFd, OwnedFd), NicError> {
    let prog = tc_drop_program(ports.as_raw_fd(), ip, lo, hi);
    let prog = prog_load(
        BPF_PROG_TYPE_SCHED_CLS,
        0,
        &prog,
        c"Dual MIT/GPL",
        "tas_tc_shared",
    )
    .map_err(|e| NicError::Unsupported(e.to_string()))?;
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_TCX_INGRESS);
    let link = sys_bpf(BPF_LINK_CREATE, &mut a)
        .map(fd_from)
        .map_err(|e| hint("bpf(BPF_LINK_CREATE, tcx ingress)", e))?;
    Ok((link, prog))
}

/// Loads [`shared_program`].
pub(crate) fn load_shared_program(
    xsks: &OwnedFd,
    ports: &OwnedFd,
    ip: u32,
    lo: u16,
    hi: u16,
) -> Result<OwnedFd, NicError> {
    let prog = shared_program(xsks.as_raw_fd(), ports.as_raw_fd(), ip, lo, hi);
    prog_load(
        BPF_PROG_TYPE_XDP,
        BPF_XDP,
        &prog,
        c"Dual MIT/GPL",
        "tas_xsk_shared",
    )
    .map_err(|e| {
        if e.source.raw_os_error() == Some(libc::EPERM) {
            hint("bpf(BPF_PROG_LOAD)", e.source)
        } else {
            NicError::Unsupported(e.to_string())
        }
    })
}

/// A zeroed `union bpf_attr` prefix, large enough for every command used
/// here; fields are written at their offsets in the kernel's layout.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn name(&mut self, off: usize, name: &str) -> &mut Self {
        let n = name.len().min(15); // BPF_OBJ_NAME_LEN 16, NUL-terminated
        self.0[off..off + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }
}

fn sys_bpf(cmd: libc::c_int, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable buffer of the size we pass; any
    // pointers stored in it (by the callers) point to live memory for the
    // duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr as *mut libc::c_void,
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

fn fd_from(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the bpf() commands we call return a new fd that nobody else owns.
    unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) }
}

fn hint(op: &'static str, e: std::io::Error) -> NicError {
    if e.raw_os_error() == Some(libc::EPERM) {
        return NicError::Unsupported(format!(
            "{op}: {e} (AF_XDP needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_NET_RAW)"
        ));
    }
    NicError::Os { op, source: e }
}

/// A map of `map_type` with the given key/value sizes and `entries` slots.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    entries: u32,
    name: &str,
) -> std::io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, map_type)
        .u32(4, key_size)
        .u32(8, value_size)
        .u32(12, entries)
        .name(28, name);
    sys_bpf(BPF_MAP_CREATE, &mut a).map(fd_from)
}

/// map[key] = value (BPF_ANY). The slices must have the map's sizes.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_ptr() as u64)
        .u64(24, 0);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// Copies map[key] into `value` (which must have the map's value size).
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> std::io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_mut_ptr() as u64);
    sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut a).map(drop)
}

/// Why a program did not load.
#[derive(Debug, thiserror::Error)]
#[error("bpf(BPF_PROG_LOAD) of {name}: {source}{}", if log.is_empty() { String::new() } else { format!("; verifier log:\n{log}") })]
pub struct LoadError {
    pub name: String,
    pub source: std::io::Error,
    /// The verifier's log (empty when the kernel refused before verifying).
    pub log: String,
}

/// Loads a program of `prog_type` (0 `expected_attach_type`: none). The
/// first attempt runs without a log; a failure is retried with the
/// verifier's log on, so the error says why.
pub fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    prog: &[Insn],
    license: &std::ffi::CStr,
    name: &str,
) -> Result<OwnedFd, LoadError> {
    let load = |log: Option<&mut [u8]>| {
        let mut a = Attr::new();
        a.u32(0, prog_type)
            .u32(4, prog.len() as u32)
            .u64(8, prog.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .name(48, name)
            .u32(68, expected_attach_type);
        if let Some(buf) = log {
            a.u32(24, 1)
                .u32(28, buf.len() as u32)
                .u64(32, buf.as_mut_ptr() as u64);
        }
        sys_bpf(BPF_PROG_LOAD, &mut a).map(fd_from)
    };
    let first = match load(None) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return Err(LoadError {
                name: name.into(),
                source: e,
                log: String::new(),
            })
        }
        Err(e) => e,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let again = load(Some(&mut buf));
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match again {
        Ok(fd) => Ok(fd),
        Err(_) => Err(LoadError {
            name: name.into(),
            source: first,
            log: String::from_utf8_lossy(&buf[..end]).into_owned(),
        }),
    }
}

/// Runs `prog` once on `frame` (BPF_PROG_TEST_RUN, no side effects on
/// any interface) and returns its verdict.
pub fn prog_test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> std::io::Result<u32> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(8, frame.len() as u32)
        .u64(16, frame.as_ptr() as u64)
        .u32(32, 1);
    sys_bpf(BPF_PROG_TEST_RUN, &mut a)?;
    Ok(u32::from_ne_bytes(a.0[4..8].try_into().expect("4 bytes")))
}

/// Pins `fd` (a program or map) at `path` on a bpffs mount.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> std::io::Result<()> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut a = Attr::new();
    a.u64(0, p.as_ptr() as u64).u32(8, fd.as_raw_fd() as u32);
    sys_bpf(BPF_OBJ_PIN, &mut a).map(drop)
}

/// A BPF_MAP_TYPE_XSKMAP with `entries` slots (one per RX queue).
pub(crate) fn create_xskmap(entries: u32) -> Result<OwnedFd, NicError> {
    map_create(BPF_MAP_TYPE_XSKMAP, 4, 4, entries, "tas_xsks")
        .map_err(|e| hint("bpf(BPF_MAP_CREATE, XSKMAP)", e))
}

/// xskmap[queue] = socket fd.
pub(crate) fn xskmap_set(map: &OwnedFd, queue: u32, sock: u32) -> Result<(), NicError> {
    map_update(map.as_fd(), &queue.to_ne_bytes(), &sock.to_ne_bytes())
        .map_err(|e| hint("bpf(BPF_MAP_UPDATE_ELEM, XSKMAP)", e))
}

/// Loads [`redirect_program`] for `map`. On failure the verifier's log is
/// part of the error.
pub(crate) fn load_redirect_program(map: &OwnedFd) -> Result<OwnedFd, NicError> {
    let prog = redirect_program(map.as_raw_fd());
    prog_load(
        BPF_PROG_TYPE_XDP,
        BPF_XDP,
        &prog,
        c"Dual MIT/GPL",
        "tas_xsk_redir",
    )
    .map_err(|e| {
        if e.source.raw_os_error() == Some(libc::EPERM) {
            hint("bpf(BPF_PROG_LOAD)", e.source)
        } else {
            NicError::Unsupported(e.to_string())
        }
    })
}

/// Attaches `prog` to interface `ifindex` through a BPF link with the given
/// XDP_FLAGS_* mode. The program stays attached while the returned fd is open.
pub fn attach_xdp(prog: &OwnedFd, ifindex: u32, mode_flags: u32) -> std::io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, mode_flags);
    sys_bpf(BPF_LINK_CREATE, &mut a).map(fd_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verifier accepts the shared-mode program (needs root, like the
    /// AF_XDP tests).
    #[test]
    fn shared_program_loads() {
        let xsks = create_xskmap(4).expect("XSKMAP (run as root)");
        let ports = create_ports_map().expect("ports map");
        map_update(ports.as_fd(), &6379u32.to_ne_bytes(), &[1]).unwrap();
        let mut v = [0u8];
        map_lookup(ports.as_fd(), &6379u32.to_ne_bytes(), &mut v).unwrap();
        assert_eq!(v, [1]);
        load_shared_program(&xsks, &ports, 0xc612_0001, 61000, 65535)
            .unwrap_or_else(|e| panic!("{e}"));
        let tc = tc_drop_program(ports.as_raw_fd(), 0xc612_0001, 61000, 65535);
        prog_load(
            BPF_PROG_TYPE_SCHED_CLS,
            0,
            &tc,
            c"Dual MIT/GPL",
            "tas_tc_test",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // Jumps land on their labels: the two exits end the program.
        let p = shared_program(3, 4, 0xc612_0001, 61000, 65535);
        assert_eq!(p.last().unwrap().code, BPF_JMP | BPF_EXIT);
    }

    /// A frame to 198.18.0.1: TCP `sport` -> `dport`, or (`icmp`) an ICMP
    /// message of that type quoting such a segment from 198.18.0.1.
    fn frame(icmp: Option<u8>, sport: u16, dport: u16) -> Vec<u8> {
        let ip_hdr = |proto: u8, src: [u8; 4], dst: [u8; 4]| {
            let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
            h.extend_from_slice(&src);
            h.extend_from_slice(&dst);
            h
        };
        let (me, peer) = ([198, 18, 0, 1], [198, 18, 0, 2]);
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let mut tcp = sport.to_be_bytes().to_vec();
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        match icmp {
            None => {
                f.extend(ip_hdr(6, peer, me));
                f.extend(tcp);
            }
            Some(t) => {
                f.extend(ip_hdr(1, [198, 18, 0, 254], me));
                f.extend_from_slice(&[t, 4, 0, 0, 0, 0, 0x05, 0x00]);
                f.extend(ip_hdr(6, me, peer));
                f.extend_from_slice(&tcp[..8]);
            }
        }
        f
    }

    /// What the shared-mode match takes for TAS (run through the tc
    /// variant, whose verdict tells: 2 dropped for the kernel = TAS's).
    #[test]
    fn shared_match_takes_tas_tcp_and_icmp_errors_only() {
        let ports = create_ports_map().expect("ports map (run as root)");
        map_update(ports.as_fd(), &6379u32.to_ne_bytes(), &[1]).unwrap();
        let tc = tc_drop_program(ports.as_raw_fd(), 0xc612_0001, 61000, 65535);
        let prog = prog_load(
            BPF_PROG_TYPE_SCHED_CLS,
            0,
            &tc,
            c"Dual MIT/GPL",
            "tas_tc_match",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let run = |f: &[u8]| prog_test_run(prog.as_fd(), f).expect("BPF_PROG_TEST_RUN");
        // TCP: a listener's port, the active-open range; the kernel's port.
        assert_eq!(run(&frame(None, 40000, 6379)), 2);
        assert_eq!(run(&frame(None, 80, 61001)), 2);
        assert_eq!(run(&frame(None, 40000, 22)), 0);
        // ICMP errors quoting TAS's segments (local port = quoted source).
        assert_eq!(run(&frame(Some(3), 6379, 40000)), 2);
        assert_eq!(run(&frame(Some(11), 61001, 80)), 2);
        // ... the kernel's connection, another type (echo request), cut
        // short of the quoted ports.
        assert_eq!(run(&frame(Some(3), 22, 40000)), 0);
        assert_eq!(run(&frame(Some(8), 6379, 40000)), 0);
        let f = frame(Some(3), 6379, 40000);
        assert_eq!(run(&f[..69]), 0);
        assert_eq!(run(&f[..70]), 2);
        // Quoting another source address.
        let mut g = f.clone();
        g[14 + 20 + 8 + 15] = 9;
        assert_eq!(run(&g), 0);
    }

    #[test]
    fn program_encoding() {
        let p = redirect_program(7);
        let bytes: Vec<u8> = p
            .iter()
            .flat_map(|i| {
                let mut b = vec![i.code, i.regs];
                b.extend_from_slice(&i.off.to_le_bytes());
                b.extend_from_slice(&i.imm.to_le_bytes());
                b
            })
            .collect();
        if cfg!(target_endian = "little") {
            // As llvm-objdump prints it for the equivalent C program.
            let want: [u8; 48] = [
                0x61, 0x12, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, // r2 = *(u32 *)(r1 + 0x10)
                0x18, 0x11, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, // r1 = map fd 7 ll
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
                0xb7, 0x03, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // r3 = 2
                0x85, 0x00, 0x00, 0x00, 0x33, 0x00, 0x00, 0x00, // call 51
                0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
            ];
            assert_eq!(bytes, want);
        }
    }
}
