//! The executors: one [`Engine`] runs a planned model on whole windows ([`Mode::Full`]) or streaming
//! ([`Mode::Exact`], [`Mode::Approximate`]).
//!
//! Every time tensor lives in a sliding buffer holding its current window of frames (time-major, `frame × channels`).
//! A hop moves every buffer by that node's `hop / stride` frames; frames that stay keep their values. In exact mode a
//! hop then computes, node by node, only the new frames at the right end plus the dirty margins
//! ([`super::plan::NodePlan::left`] / `right`) whose values depend on zero padding, so every window equals the
//! full-window run. Approximate mode computes only the newest frames and keeps stale edge values. Vectors (after
//! global pooling or flatten) are recomputed from the cached last time tensor on every hop.

use super::ir::*;
use super::plan::Plan;
use crate::kernels::conv::{dense_layer, dense_layer_i8, ConvKernels, ConvShape};
use crate::kernels::isa::Isa;
use std::sync::Arc;

/// How windows after the first are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Reuse shift-invariant frames, recompute the padding-dependent edges: equal to the full-window run.
    Exact,
    /// Reuse everything, compute only new frames (StreamiNNC-style): cheaper, deviates near the edges.
    Approximate,
    /// Recompute the whole window every hop (the baseline).
    Full,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" => Ok(Mode::Exact),
            "approximate" => Ok(Mode::Approximate),
            "full" => Ok(Mode::Full),
            o => Err(format!(
                "unknown mode `{o}`: expected exact, approximate or full"
            )),
        }
    }
}

/// The current window of one time tensor, in a buffer that slides forward and compacts when it reaches its end.
#[derive(Debug, Clone)]
struct TimeBuf {
    channels: usize,
    len: usize,
    cap: usize,
    base: usize,
    data: Vec<f32>,
}

impl TimeBuf {
    fn new(channels: usize, len: usize, hop: usize) -> Self {
        let cap = 4 * len + hop;
        TimeBuf {
            channels,
            len,
            cap,
            base: 0,
            data: vec![0.0; cap * channels],
        }
    }
    fn rows(&self, j0: usize, j1: usize) -> &[f32] {
        &self.data[(self.base + j0) * self.channels..(self.base + j1) * self.channels]
    }
    fn rows_mut(&mut self, j0: usize, j1: usize) -> &mut [f32] {
        &mut self.data[(self.base + j0) * self.channels..(self.base + j1) * self.channels]
    }
    fn window(&self) -> &[f32] {
        self.rows(0, self.len)
    }
    /// Advance by `h` frames: frame `j + h` becomes frame `j`; the last `h` frames are stale until computed.
    fn shift(&mut self, h: usize) {
        if self.base + h + self.len > self.cap {
            let c = self.channels;
            let keep = self.len.saturating_sub(h);
            self.data
                .copy_within((self.base + h) * c..(self.base + h + keep) * c, 0);
            self.base = 0;
        } else {
            self.base += h;
        }
    }
}

#[derive(Debug, Clone)]
enum Buf {
    Time(TimeBuf),
    Vector(Vec<f32>),
    Dead,
}

/// A planned model with its activation caches. Feed input frames with [`Engine::push`]; every completed window
/// yields one output (ONNX layout: `[channels, frames]` for time outputs, the vector otherwise).
pub struct Engine {
    graph: Arc<Graph>,
    plan: Plan,
    mode: Mode,
    kernels: ConvKernels,
    bufs: Vec<Buf>,
    started: bool,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    windows: u64,
    /// Per node: partial reductions of a global pooling node, reused across hops (streaming modes).
    pools: Vec<Option<PoolBlocks>>,
    /// The last window's output in ONNX layout (reused between windows).
    out: Vec<f32>,
}

/// Partial reductions of a global pooling node over blocks of `block` input frames (a divisor of the input's
/// hop), in window order starting at block `head` of a ring. A hop shifts the window by whole blocks, so blocks
/// whose frames did not change are reused and only the others (new frames, padding-dependent edges, the tail
/// after the last whole block) are reduced again. Max is exact; the mean sums f64 partial sums.
#[derive(Debug, Clone)]
struct PoolBlocks {
    block: usize,
    blocks: usize,
    head: usize,
    valid: bool,
    /// `blocks × channels` partial results (sums or maxima).
    vals: Vec<f64>,
}

impl PoolBlocks {
    fn new(len: usize, hop: usize, channels: usize) -> Self {
        // Blocks of about √(len/2) frames balance reducing changed blocks against combining all of them.
        let target = ((len as f64 / 2.0).sqrt().ceil() as usize).max(1);
        let block = (1..=hop.max(1))
            .filter(|d| hop.is_multiple_of(*d) && *d <= target)
            .max()
            .unwrap_or(1);
        let blocks = len / block;
        PoolBlocks {
            block,
            blocks,
            head: 0,
            valid: false,
            vals: vec![0.0; blocks * channels],
        }
    }
}

/// Reduce frames `rows` (time-major, `c` channels) into `acc` (`c` values).
#[inline(always)]
fn reduce_rows(r: Reduce, rows: &[f32], c: usize, acc: &mut [f64]) {
    match r {
        Reduce::Mean => {
            acc.fill(0.0);
            for row in rows.chunks_exact(c) {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
            }
        }
        Reduce::Max => {
            let mut m = [f32::NEG_INFINITY; 64];
            for (ch0, a) in (0..c).step_by(64).zip(acc.chunks_mut(64)) {
                let w = a.len();
                let m = &mut m[..w];
                m.fill(f32::NEG_INFINITY);
                for row in rows.chunks_exact(c) {
                    m.iter_mut()
                        .zip(&row[ch0..ch0 + w])
                        .for_each(|(m, &v)| *m = max(*m, v));
                }
                a.iter_mut().zip(m.iter()).for_each(|(a, &m)| *a = m as f64);
            }
        }
    }
}

impl Engine {
    /// An engine for `graph` with `plan` (see [`Plan::new`]).
    pub fn new(graph: Arc<Graph>, plan: Plan, mode: Mode) -> Self {
        Self::with_kernels(graph, plan, mode, *ConvKernels::get())
    }

    /// As [`Engine::new`] with a given kernel table (tests compare ISA levels).
    pub fn with_kernels(graph: Arc<Graph>, plan: Plan, mode: Mode, kernels: ConvKernels) -> Self {
        let bufs = graph
            .nodes
            .iter()
            .zip(&plan.nodes)
            .enumerate()
            .map(|(i, (n, p))| {
                if !plan.live[i] {
                    Buf::Dead
                } else {
                    match n.kind {
                        Kind::Time { channels } => Buf::Time(TimeBuf::new(channels, p.len, p.hop)),
                        Kind::Vector { .. } => Buf::Vector(vec![0.0; p.len]),
                    }
                }
            })
            .collect();
        Engine {
            graph,
            plan,
            mode,
            kernels,
            bufs,
            started: false,
            pending: vec![],
            scratch: vec![],
            windows: 0,
            pools: vec![None; 0],
            out: vec![],
        }
        .with_pool_blocks()
    }

    fn with_pool_blocks(mut self) -> Self {
        self.pools = (0..self.graph.nodes.len())
            .map(|i| {
                let n = &self.graph.nodes[i];
                match (&n.op, self.plan.live[i], self.mode) {
                    (Op::GlobalPool(_), true, Mode::Exact | Mode::Approximate) => {
                        let x = self.plan.nodes[n.inputs[0]];
                        let c = match self.graph.nodes[n.inputs[0]].kind {
                            Kind::Time { channels } => channels,
                            Kind::Vector { .. } => 0,
                        };
                        (c > 0).then(|| PoolBlocks::new(x.len, x.hop, c))
                    }
                    _ => None,
                }
            })
            .collect();
        self
    }

    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// Windows completed since the start (or the last reset).
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// ONNX shape of one window's output.
    pub fn output_dims(&self) -> Vec<usize> {
        let p = self.plan.nodes[self.graph.output];
        let mut known = 1;
        for d in self.graph.output_shape.iter().flatten() {
            known *= d;
        }
        let missing = if p.is_vector() {
            p.len / known.max(1)
        } else {
            p.len
        };
        self.graph
            .output_shape
            .iter()
            .map(|d| d.unwrap_or(missing))
            .collect()
    }

    /// Forget the stream: the next push starts a new first window.
    pub fn reset(&mut self) {
        self.started = false;
        self.pending.clear();
        self.windows = 0;
        for p in self.pools.iter_mut().flatten() {
            p.valid = false;
        }
    }

    /// Feed input frames (time-major: `frames × in_channels` values) and append the output of every window they
    /// complete. The first window needs `window` frames, each later one `hop` more.
    pub fn push(&mut self, frames: &[f32], out: &mut Vec<Vec<f32>>) {
        self.push_each(frames, |y| out.push(y.to_vec()));
    }

    /// As [`Engine::push`], handing each window's output (ONNX layout) to `f` from a buffer the engine reuses.
    pub fn push_each(&mut self, frames: &[f32], mut f: impl FnMut(&[f32])) {
        let c = self.graph.in_channels;
        self.pending.extend_from_slice(frames);
        let (w, h) = (self.plan.window, self.plan.hop);
        let mut used = 0;
        loop {
            let avail = (self.pending.len() - used) / c;
            if !self.started {
                if avail < w {
                    break;
                }
                let Buf::Time(b) = &mut self.bufs[0] else {
                    unreachable!("node 0 is the input")
                };
                b.base = 0;
                b.rows_mut(0, w)
                    .copy_from_slice(&self.pending[used..used + w * c]);
                used += w * c;
                for p in self.pools.iter_mut().flatten() {
                    p.valid = false;
                }
                self.compute_all();
                self.started = true;
            } else {
                if avail < h {
                    break;
                }
                self.shift_all();
                let Buf::Time(b) = &mut self.bufs[0] else {
                    unreachable!("node 0 is the input")
                };
                b.rows_mut(w - h, w)
                    .copy_from_slice(&self.pending[used..used + h * c]);
                used += h * c;
                match self.mode {
                    Mode::Full => self.compute_all(),
                    Mode::Exact | Mode::Approximate => self.compute_hop(),
                }
            }
            let streamed = self.windows > 0 && self.mode != Mode::Full;
            self.windows += 1;
            let mut o = std::mem::take(&mut self.out);
            if streamed {
                self.output_hop_into(&mut o);
            } else {
                self.output_into(&mut o);
            }
            f(&o);
            self.out = o;
        }
        self.pending.drain(..used);
    }

    /// Run one whole window (time-major `window × in_channels`) from scratch and return its output. The stream
    /// state is replaced by this window.
    pub fn run_window(&mut self, window: &[f32]) -> Vec<f32> {
        self.reset();
        let mut out = vec![];
        self.push(window, &mut out);
        out.pop().unwrap_or_default()
    }

    /// The output of the current window in ONNX layout.
    pub fn output(&self) -> Vec<f32> {
        let mut o = vec![];
        self.output_into(&mut o);
        o
    }

    /// The output of the current window in ONNX layout, into `o` (resized).
    fn output_into(&self, o: &mut Vec<f32>) {
        o.clear();
        match &self.bufs[self.graph.output] {
            Buf::Time(b) => {
                let (c, l) = (b.channels, b.len);
                o.resize(c * l, 0.0);
                transpose_frames(b.window(), c, l, o);
            }
            Buf::Vector(v) => o.extend_from_slice(v),
            Buf::Dead => {}
        }
    }

    /// As [`Engine::output_into`] after a streaming hop, with `o` holding the previous window's output: each
    /// channel's row moves back by the output's hop and only the frames this hop computed are transposed in.
    fn output_hop_into(&self, o: &mut Vec<f32>) {
        let id = self.graph.output;
        let Buf::Time(b) = &self.bufs[id] else {
            return self.output_into(o);
        };
        let (c, l, h) = (b.channels, b.len, self.plan.nodes[id].hop);
        let (a, z) = self.changed_frames(id);
        if o.len() != c * l || h >= l || z <= a {
            return self.output_into(o);
        }
        let w = b.window();
        for (ch, row) in o.chunks_exact_mut(l).enumerate() {
            row.copy_within(h.., 0);
            for t in (0..a).chain(z..l) {
                row[t] = w[t * c + ch];
            }
        }
    }

    fn shift_all(&mut self) {
        // Full mode recomputes every frame: only the input keeps frames across hops.
        let n = if self.mode == Mode::Full {
            1
        } else {
            self.bufs.len()
        };
        for (i, b) in self.bufs.iter_mut().enumerate().take(n) {
            if let Buf::Time(t) = b {
                t.shift(self.plan.nodes[i].hop);
            }
        }
    }

    fn compute_all(&mut self) {
        for i in 1..self.graph.nodes.len() {
            if self.plan.live[i] {
                let len = self.plan.nodes[i].len;
                self.compute(i, 0, len);
            }
        }
    }

    fn compute_hop(&mut self) {
        for i in 1..self.graph.nodes.len() {
            if !self.plan.live[i] {
                continue;
            }
            let p = self.plan.nodes[i];
            if self.pools[i].is_some() {
                self.global_pool_hop(i);
                continue;
            }
            if p.is_vector() || p.left >= p.len {
                self.compute(i, 0, p.len);
                continue;
            }
            if self.mode == Mode::Approximate {
                self.compute(i, p.len.saturating_sub(p.hop), p.len);
                continue;
            }
            let r0 = p.len.saturating_sub(p.right + p.hop);
            if p.left >= r0 {
                self.compute(i, 0, p.len);
            } else {
                if p.left > 0 {
                    self.compute(i, 0, p.left);
                }
                self.compute(i, r0, p.len);
            }
        }
    }

    /// Frames of node `i` this hop computed: `[0, a)` and `[b, len)`, the others kept their (shifted) values.
    fn changed_frames(&self, i: usize) -> (usize, usize) {
        let p = self.plan.nodes[i];
        if p.left >= p.len {
            return (0, 0);
        }
        if self.mode == Mode::Approximate {
            return (0, p.len.saturating_sub(p.hop));
        }
        let r0 = p.len.saturating_sub(p.right + p.hop);
        if p.left >= r0 {
            (0, 0)
        } else {
            (p.left, r0)
        }
    }

    /// A global pooling node in a streaming hop: reuse the partial reductions of unchanged blocks.
    fn global_pool_hop(&mut self, i: usize) {
        let node = &self.graph.nodes[i];
        let Op::GlobalPool(r) = node.op else {
            unreachable!("pool blocks belong to global pooling nodes")
        };
        let xid = node.inputs[0];
        let xp = self.plan.nodes[xid];
        let (a, b) = self.changed_frames(xid);
        let Buf::Vector(mut y) = std::mem::replace(&mut self.bufs[i], Buf::Dead) else {
            unreachable!("a global pool makes a vector")
        };
        let (Some(pb), Buf::Time(x)) = (self.pools[i].as_mut(), &self.bufs[xid]) else {
            unreachable!("a global pool reads a time tensor")
        };
        let (c, l, bs, nb) = (x.channels, x.len, pb.block, pb.blocks);
        let m = xp.hop / bs;
        let reuse = pb.valid && m < nb;
        if reuse {
            pb.head = (pb.head + m) % nb;
        } else {
            pb.head = 0;
        }
        let w = x.window();
        for j in 0..nb {
            let (f0, f1) = (j * bs, (j + 1) * bs);
            if reuse && j + m < nb && f0 >= a && f1 <= b {
                continue;
            }
            let slot = (pb.head + j) % nb;
            reduce_rows(
                r,
                &w[f0 * c..f1 * c],
                c,
                &mut pb.vals[slot * c..(slot + 1) * c],
            );
        }
        pb.valid = true;
        let mut tail = vec![0.0f64; c];
        reduce_rows(r, &w[nb * bs * c..l * c], c, &mut tail);
        match r {
            Reduce::Mean => {
                let mut acc = tail;
                if nb * bs == l {
                    acc.fill(0.0);
                }
                for blk in pb.vals.chunks_exact(c) {
                    acc.iter_mut().zip(blk).for_each(|(s, &v)| *s += v);
                }
                for (o, s) in y.iter_mut().zip(&acc) {
                    *o = (s / l as f64) as f32;
                }
            }
            Reduce::Max => {
                let mut acc = if nb * bs == l {
                    vec![f64::NEG_INFINITY; c]
                } else {
                    tail
                };
                for blk in pb.vals.chunks_exact(c) {
                    acc.iter_mut().zip(blk).for_each(|(s, &v)| *s = s.max(v));
                }
                for (o, s) in y.iter_mut().zip(&acc) {
                    *o = *s as f32;
                }
            }
        }
        self.bufs[i] = Buf::Vector(y);
    }

    /// Compute frames `j0..j1` of node `i` (all of it for vectors) from its inputs' current windows. The elementwise, pooling and copying loops are plain Rust: they are compiled
    /// once per instruction set so the widest vectors the CPU has run them (the results are the same bits, since
    /// no operation is fused or reordered).
    fn compute(&mut self, i: usize, j0: usize, j1: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let isa = self.kernels.isa;
            if isa.avx512f && isa.avx2_fma {
                // SAFETY: the CPU has AVX-512F, AVX2 and FMA (the kernel level's ISA is a subset of the detected
                // one); the body is safe code.
                return unsafe { self.compute_avx512(i, j0, j1) };
            }
            if isa.avx2_fma {
                // SAFETY: the CPU has AVX2 and FMA (as above); the body is safe code.
                return unsafe { self.compute_avx2(i, j0, j1) };
            }
        }
        self.compute_body(i, j0, j1)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn compute_avx512(&mut self, i: usize, j0: usize, j1: usize) {
        self.compute_body(i, j0, j1)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn compute_avx2(&mut self, i: usize, j0: usize, j1: usize) {
        self.compute_body(i, j0, j1)
    }

    #[inline(always)]
    fn compute_body(&mut self, i: usize, j0: usize, j1: usize) {
        let mut me = std::mem::replace(&mut self.bufs[i], Buf::Dead);
        let node = &self.graph.nodes[i];
        let bufs = &self.bufs;
        let time = |k: usize| -> &TimeBuf {
            match &bufs[node.inputs[k]] {
                Buf::Time(t) => t,
                _ => unreachable!("importer guarantees a time input"),
            }
        };
        let vector = |id: NodeId| -> &[f32] {
            match &bufs[id] {
                Buf::Vector(v) => v,
                _ => unreachable!("importer guarantees a vector input"),
            }
        };
        match (&mut me, &node.op) {
            (Buf::Time(y), Op::Conv(conv)) => {
                conv_range(&self.kernels, conv, time(0), y, j0, j1, &mut self.scratch)
            }
            (Buf::Time(y), Op::Pool(pool)) => pool_range(pool, time(0), y, j0, j1),
            (
                Buf::Time(y),
                Op::Pad {
                    left,
                    right: _,
                    value,
                },
            ) => {
                let x = time(0);
                // Frames j0..j1 map to input frames j − left; the part inside the input is one block copy.
                let a = j0.max(*left).min(j1);
                let b = (x.len + left).clamp(a, j1);
                y.rows_mut(j0, a).fill(*value);
                if b > a {
                    y.rows_mut(a, b).copy_from_slice(x.rows(a - left, b - left));
                }
                y.rows_mut(b, j1).fill(*value);
            }
            (Buf::Time(y), Op::Crop { left, .. }) => {
                let x = time(0);
                y.rows_mut(j0, j1)
                    .copy_from_slice(x.rows(j0 + left, j1 + left));
            }
            (Buf::Time(y), Op::Unary(u)) => unary_slice(
                self.kernels.isa,
                *u,
                time(0).rows(j0, j1),
                y.rows_mut(j0, j1),
            ),
            (Buf::Time(y), Op::PRelu(slope)) => {
                let c = y.channels;
                let x = time(0).rows(j0, j1);
                let s = per_channel(slope, c);
                for (orow, xrow) in y.rows_mut(j0, j1).chunks_mut(c).zip(x.chunks(c)) {
                    for ((o, &v), &s) in orow.iter_mut().zip(xrow).zip(s.iter()) {
                        *o = if v >= 0.0 { v } else { s * v };
                    }
                }
            }
            (Buf::Time(y), Op::Affine { scale, shift }) => {
                let c = y.channels;
                let x = time(0).rows(j0, j1);
                let (a, b) = (per_channel(scale, c), per_channel(shift, c));
                for (orow, xrow) in y.rows_mut(j0, j1).chunks_mut(c).zip(x.chunks(c)) {
                    for ((o, &v), (&a, &b)) in orow.iter_mut().zip(xrow).zip(a.iter().zip(b.iter()))
                    {
                        *o = v * a + b;
                    }
                }
            }
            (Buf::Time(y), Op::Binary(op, a, b)) => {
                let c = y.channels;
                fn operand<'a>(
                    o: &'a Operand,
                    bufs: &'a [Buf],
                    j0: usize,
                    j1: usize,
                ) -> (Option<&'a [f32]>, &'a [f32]) {
                    match o {
                        Operand::Node(id) => match &bufs[*id] {
                            Buf::Time(t) => (Some(t.rows(j0, j1)), &[][..]),
                            _ => unreachable!("time operand"),
                        },
                        Operand::Const(v) => (None, v.as_slice()),
                        Operand::Broadcast(id) => match &bufs[*id] {
                            Buf::Vector(v) => (None, v.as_slice()),
                            _ => unreachable!("vector operand"),
                        },
                    }
                }
                let (ar, ac) = operand(a, bufs, j0, j1);
                let (br, bc) = operand(b, bufs, j0, j1);
                let out = y.rows_mut(j0, j1);
                let op = *op;
                match (ar, br) {
                    (Some(ar), Some(br)) => {
                        let it = out.iter_mut().zip(ar).zip(br);
                        match op {
                            BinOp::Add => it.for_each(|((o, &p), &q)| *o = p + q),
                            BinOp::Sub => it.for_each(|((o, &p), &q)| *o = p - q),
                            BinOp::Mul => it.for_each(|((o, &p), &q)| *o = p * q),
                            BinOp::Div => it.for_each(|((o, &p), &q)| *o = p / q),
                        }
                    }
                    (Some(ar), None) => {
                        let bc = per_channel(bc, c);
                        for (orow, arow) in out.chunks_mut(c).zip(ar.chunks(c)) {
                            let it = orow.iter_mut().zip(arow).zip(bc.iter());
                            match op {
                                BinOp::Add => it.for_each(|((o, &p), &q)| *o = p + q),
                                BinOp::Sub => it.for_each(|((o, &p), &q)| *o = p - q),
                                BinOp::Mul => it.for_each(|((o, &p), &q)| *o = p * q),
                                BinOp::Div => it.for_each(|((o, &p), &q)| *o = p / q),
                            }
                        }
                    }
                    (None, Some(br)) => {
                        let ac = per_channel(ac, c);
                        for (orow, brow) in out.chunks_mut(c).zip(br.chunks(c)) {
                            let it = orow.iter_mut().zip(ac.iter()).zip(brow);
                            match op {
                                BinOp::Add => it.for_each(|((o, &p), &q)| *o = p + q),
                                BinOp::Sub => it.for_each(|((o, &p), &q)| *o = p - q),
                                BinOp::Mul => it.for_each(|((o, &p), &q)| *o = p * q),
                                BinOp::Div => it.for_each(|((o, &p), &q)| *o = p / q),
                            }
                        }
                    }
                    (None, None) => unreachable!("one operand is the node itself"),
                }
            }
            (Buf::Time(y), Op::Concat) => {
                let c = y.channels;
                let mut off = 0;
                for k in 0..node.inputs.len() {
                    let x = time(k);
                    let xc = x.channels;
                    let xr = x.rows(j0, j1);
                    let out = y.rows_mut(j0, j1);
                    for t in 0..(j1 - j0) {
                        out[t * c + off..t * c + off + xc]
                            .copy_from_slice(&xr[t * xc..(t + 1) * xc]);
                    }
                    off += xc;
                }
            }
            (Buf::Time(y), Op::Softmax) => {
                let c = y.channels;
                let x = time(0).rows(j0, j1);
                for (o, v) in y.rows_mut(j0, j1).chunks_mut(c).zip(x.chunks(c)) {
                    softmax(v, o);
                }
            }
            (Buf::Vector(y), Op::GlobalPool(r)) => {
                let x = time(0);
                let (c, l) = (x.channels, x.len);
                let w = x.window();
                // Row by row (frames are contiguous), accumulating in f64 for the mean.
                match r {
                    Reduce::Mean => {
                        let mut acc = vec![0.0f64; c];
                        for row in w.chunks_exact(c) {
                            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
                        }
                        for (o, a) in y.iter_mut().zip(&acc) {
                            *o = (a / l as f64) as f32;
                        }
                    }
                    Reduce::Max => {
                        y.fill(f32::NEG_INFINITY);
                        for row in w.chunks_exact(c) {
                            y.iter_mut().zip(row).for_each(|(a, &v)| *a = max(*a, v));
                        }
                    }
                }
            }
            (Buf::Vector(y), Op::Flatten) => {
                let x = time(0);
                let (c, l) = (x.channels, x.len);
                let w = x.window();
                for t in 0..l {
                    for ch in 0..c {
                        y[ch * l + t] = w[t * c + ch];
                    }
                }
            }
            (
                Buf::Vector(y),
                Op::Dense {
                    weight, bias, int8, ..
                },
            ) => match int8 {
                Some(q) => dense_layer_i8(&self.kernels, vector(node.inputs[0]), q, bias, y),
                None => dense_layer(&self.kernels, vector(node.inputs[0]), weight, bias, y),
            },
            (Buf::Vector(y), Op::Unary(u)) => {
                unary_slice(self.kernels.isa, *u, vector(node.inputs[0]), y)
            }
            (Buf::Vector(y), Op::PRelu(slope)) => {
                for (idx, (o, &v)) in y.iter_mut().zip(vector(node.inputs[0])).enumerate() {
                    let s = slope[if slope.len() == 1 { 0 } else { idx }];
                    *o = if v >= 0.0 { v } else { s * v };
                }
            }
            (Buf::Vector(y), Op::Affine { scale, shift }) => {
                for (idx, (o, &v)) in y.iter_mut().zip(vector(node.inputs[0])).enumerate() {
                    *o = v * scale[idx % scale.len()] + shift[idx % shift.len()];
                }
            }
            (Buf::Vector(y), Op::Binary(op, a, b)) => {
                let val = |o: &Operand, idx: usize| -> f32 {
                    match o {
                        Operand::Node(id) | Operand::Broadcast(id) => vector(*id)[idx],
                        Operand::Const(v) => v[if v.len() == 1 { 0 } else { idx }],
                    }
                };
                for (idx, o) in y.iter_mut().enumerate() {
                    *o = op.apply(val(a, idx), val(b, idx));
                }
            }
            (Buf::Vector(y), Op::Softmax) => softmax(vector(node.inputs[0]), y),
            (_, op) => unreachable!("importer produced {op:?} for kind {:?}", node.kind),
        }
        self.bufs[i] = me;
    }
}

/// `a.max(b)` for an accumulator `a` that is never NaN, as one compare-and-select (a NaN `b` keeps `a`, as
/// `f32::max` does) so it vectorises to a single max instruction.
#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// One value per channel from a parameter given once or per channel (a copy only in the first case).
#[inline(always)]
fn per_channel(v: &[f32], c: usize) -> std::borrow::Cow<'_, [f32]> {
    if v.len() == c {
        std::borrow::Cow::Borrowed(v)
    } else {
        std::borrow::Cow::Owned(vec![v.first().copied().unwrap_or(0.0); c])
    }
}

/// `v.max(lo).min(hi)` (a NaN `v` gives `lo`, as there) as two compare-and-selects.
#[inline(always)]
fn clip(v: f32, lo: f32, hi: f32) -> f32 {
    let a = if v > lo { v } else { lo };
    if a < hi {
        a
    } else {
        hi
    }
}

/// An elementwise function over a slice: the transcendental ones through the vectorised kernels.
#[inline(always)]
fn unary_slice(isa: Isa, u: Unary, x: &[f32], y: &mut [f32]) {
    use crate::kernels::cnn_act::{apply, Act};
    let act = match u {
        Unary::Sigmoid => Some(Act::Sigmoid),
        Unary::Tanh => Some(Act::Tanh),
        Unary::Erf => Some(Act::Erf),
        Unary::Gelu { tanh: false } => Some(Act::Gelu),
        Unary::Elu(a) => Some(Act::Elu(a)),
        Unary::Selu(a, g) => Some(Act::Selu(a, g)),
        Unary::Softplus => Some(Act::Softplus),
        Unary::Silu => Some(Act::Silu),
        _ => None,
    };
    if let Some(act) = act {
        return apply(isa, act, x, y);
    }
    match u {
        Unary::Relu => y.iter_mut().zip(x).for_each(|(o, &v)| *o = max(0.0, v)),
        Unary::Identity => y.copy_from_slice(x),
        Unary::Clip(lo, hi) => y.iter_mut().zip(x).for_each(|(o, &v)| *o = clip(v, lo, hi)),
        Unary::LeakyRelu(a) => y
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = if v >= 0.0 { v } else { a * v }),
        // The formulas of `Unary::apply`, one loop each so they vectorise.
        Unary::HardSigmoid(a, b) => y
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = (a * v + b).clamp(0.0, 1.0)),
        Unary::HardSwish => y
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = v * (v / 6.0 + 0.5).clamp(0.0, 1.0)),
        Unary::Neg => y.iter_mut().zip(x).for_each(|(o, &v)| *o = -v),
        Unary::Abs => y.iter_mut().zip(x).for_each(|(o, &v)| *o = v.abs()),
        _ => y.iter_mut().zip(x).for_each(|(o, &v)| *o = u.apply(v)),
    }
}

/// An elementwise function applied in place, through a small buffer so the slice kernels can run.
#[inline(always)]
fn unary_in_place(isa: Isa, u: Unary, y: &mut [f32]) {
    match u {
        Unary::Relu => return y.iter_mut().for_each(|v| *v = max(0.0, *v)),
        Unary::Identity => return,
        Unary::Clip(lo, hi) => return y.iter_mut().for_each(|v| *v = clip(*v, lo, hi)),
        Unary::LeakyRelu(a) => {
            return y
                .iter_mut()
                .for_each(|v| *v = if *v >= 0.0 { *v } else { a * *v })
        }
        _ => {}
    }
    let mut buf = [0.0f32; 256];
    for chunk in y.chunks_mut(256) {
        let b = &mut buf[..chunk.len()];
        b.copy_from_slice(chunk);
        unary_slice(isa, u, b, chunk);
    }
}

/// Time-major `l × c` frames → channel-major `c × l`, in tiles of frames so reads and writes both stream.
fn transpose_frames(w: &[f32], c: usize, l: usize, o: &mut [f32]) {
    const TILE: usize = 64;
    let mut t0 = 0;
    while t0 < l {
        let t1 = (t0 + TILE).min(l);
        for ch in 0..c {
            let orow = &mut o[ch * l + t0..ch * l + t1];
            for (v, t) in orow.iter_mut().zip(t0..t1) {
                *v = w[t * c + ch];
            }
        }
        t0 = t1;
    }
}

#[inline(always)]
fn softmax(x: &[f32], y: &mut [f32]) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The exponentials first (a loop that vectorises), then their sum in order.
    for (o, &v) in y.iter_mut().zip(x) {
        *o = crate::kernels::cnn_act::exp(v - m);
    }
    let s: f64 = y.iter().map(|&e| e as f64).sum();
    let inv = (1.0 / s) as f32;
    for o in y.iter_mut() {
        *o *= inv;
    }
}

/// Output frames `j0..j1` of a convolution. Frames whose input rows are all inside the window read the input
/// buffer directly; frames that reach into the zero padding read a small padded copy.
#[inline(always)]
fn conv_range(
    k: &ConvKernels,
    conv: &Conv,
    x: &TimeBuf,
    y: &mut TimeBuf,
    j0: usize,
    j1: usize,
    scratch: &mut Vec<f32>,
) {
    let sh = ConvShape {
        cin: conv.cin,
        cout: conv.cout,
        k: conv.k,
        stride: conv.stride,
        dilation: conv.dilation,
    };
    let span = (conv.k - 1) * conv.dilation + 1;
    let (s, pl) = (conv.stride, conv.pad_left);
    // Direct frames: j·s ≥ pl and j·s − pl + span ≤ len.
    let ja = pl.div_ceil(s).clamp(j0, j1);
    let jb = if x.len + pl >= span {
        (x.len + pl - span) / s + 1
    } else {
        0
    };
    let jb = jb.clamp(ja, j1);
    let run = |xs: &[f32], y: &mut TimeBuf, a: usize, b: usize| {
        if b > a {
            let out = y.rows_mut(a, b);
            match (&conv.int8, conv.depthwise) {
                (Some(q), true) => (k.depthwise_i8)(&sh, xs, q, &conv.bias, out, b - a),
                (Some(q), false) => (k.dense_i8)(&sh, xs, q, &conv.bias, out, b - a),
                (None, true) => (k.depthwise)(&sh, xs, &conv.weight, &conv.bias, out, b - a),
                (None, false) => (k.dense)(&sh, xs, &conv.weight, &conv.bias, out, b - a),
            }
            if let Some(u) = conv.act {
                unary_in_place(k.isa, u, out);
            }
        }
    };
    if jb > ja {
        let r0 = ja * s - pl;
        run(x.rows(r0, r0 + sh.rows_needed(jb - ja)), y, ja, jb);
    }
    for (a, b) in [(j0, ja), (jb, j1)] {
        if b <= a {
            continue;
        }
        let first = (a * s) as isize - pl as isize;
        let rows = sh.rows_needed(b - a);
        let c = conv.cin;
        scratch.clear();
        scratch.resize(rows * c, 0.0);
        for r in 0..rows {
            let src = first + r as isize;
            if src >= 0 && (src as usize) < x.len {
                let s = src as usize;
                scratch[r * c..(r + 1) * c].copy_from_slice(x.rows(s, s + 1));
            }
        }
        run(scratch, y, a, b);
    }
}

#[inline(always)]
fn pool_range(p: &Pool, x: &TimeBuf, y: &mut TimeBuf, j0: usize, j1: usize) {
    for j in j0..j1 {
        let acc = y.rows_mut(j, j + 1);
        acc.fill(if p.kind == PoolKind::Max {
            f32::NEG_INFINITY
        } else {
            0.0
        });
        let mut count = 0usize;
        for kk in 0..p.k {
            let idx = (j * p.stride + kk * p.dilation) as isize - p.pad_left as isize;
            if idx < 0 || idx as usize >= x.len {
                continue;
            }
            count += 1;
            let row = x.rows(idx as usize, idx as usize + 1);
            match p.kind {
                PoolKind::Max => acc.iter_mut().zip(row).for_each(|(a, &v)| *a = max(*a, v)),
                PoolKind::Avg { .. } => acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v),
            }
        }
        if let PoolKind::Avg { count_include_pad } = p.kind {
            let d = if count_include_pad { p.k } else { count.max(1) } as f32;
            acc.iter_mut().for_each(|a| *a /= d);
        }
    }
}

/// Normalised root-mean-square error of `got` against `want`: `rms(got − want) / rms(want)`.
pub fn nrmse(got: &[f32], want: &[f32]) -> f64 {
    let (mut e, mut r) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        e += ((g - w) as f64).powi(2);
        r += (w as f64).powi(2);
    }
    if r == 0.0 {
        e.sqrt()
    } else {
        (e / r).sqrt()
    }
}

impl crate::streaming::StreamingModule for Engine {
    type Input = [f32];
    type Output = Vec<Vec<f32>>;
    fn step(&mut self, input: &[f32]) -> crate::Result<Vec<Vec<f32>>> {
        let mut out = vec![];
        self.push(input, &mut out);
        Ok(out)
    }
    fn reset_state(&mut self) {
        self.reset();
    }
}
