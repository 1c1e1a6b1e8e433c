"""Single-threaded SGEMM in Numba with an explicit-vector micro-kernel: C (+)= A @ B.

Why not OpenBLAS (NumPy's): the convs call thousands of GEMMs of a few hundred columns
from inside their parallel loops (kernels.conv_tiles), and OpenBLAS's float32 kernel is
chosen by what the environment allows: with `OPENBLAS_CORETYPE=Haswell` (how this
project's machine is pinned) it runs AVX2 at ~115 GFLOP/s per core, ~100 on conv-sized
products.
LLVM's loop vectorizer would not do better from plain Python loops (it prefers 256-bit
vectors on these CPUs and cannot keep a tile of C in registers). So the inner kernel is
written directly in LLVM IR (`numba.extending.intrinsic`): an MR x NR tile of C held in
MR * NR / VW vector registers, one FMA per register per step of k, the B row loaded as
NR / VW vectors and each A value broadcast. With AVX-512 that is 12 x 32 (24 zmm
accumulators), timed at 190-210 GFLOP/s on one core of this machine for conv shapes,
about twice OpenBLAS-Haswell; with AVX2 only, 6 x 16 in ymm.

Around it, the usual blocking (Goto & van de Geijn): B cut into KC x NC blocks packed as
NR-wide panels (k-major, zero-padded), A into MC x KC blocks packed as MR-tall panels;
each B micro-panel (KC x NR, 32 KB) stays in L1 while the A panels stream from L2. The
sum over k runs in a fixed order (k blocks in turn, k in turn inside), so results are
the same run to run; they differ from OpenBLAS's by float32 rounding only.

`gemm(a, b, c, accumulate)` takes 2-D float32 arrays of any strides for a and b
(transposed views included) and a row-contiguous c. The convs use the pieces directly:
weights packed once (`pack_weights`), patches packed from the input (`pack_patches`, and
transposed for the weight gradient, `pack_patches_t`), `gemm_packed` / `gemm_planes` on
them; `gemm_nt` dots rows of two matrices (C += A B^T) without packing. `ENABLED` is
False on CPUs without AVX2+FMA (as Numba targets them), where the callers keep NumPy's
matmul; the kernels' shapes follow the features Numba compiles for.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from .config import jit
from .epilogue import U64


def _target_features() -> set[str]:
    """The CPU features Numba compiles for: NUMBA_CPU_FEATURES when set (a portable
    build, or a test of another instruction set), else the host's. The kernels' shapes
    follow them, and Numba's cache keeps code for different features apart."""
    flat = numba_config.CPU_FEATURES
    if flat is None:
        try:
            flat = llvm.get_host_cpu_features().flatten()
        except Exception:          # pragma: no cover - LLVM cannot read the CPU
            return set()
    return {f.strip()[1:] for f in flat.split(",") if f.strip().startswith("+")}


_FEATURES = _target_features()
if "avx512f" in _FEATURES:
    VW, MR, NR = 16, 12, 32          # 24 zmm accumulators of 32
else:
    VW, MR, NR = 8, 6, 16            # 12 ymm accumulators of 16
ENABLED = "avx2" in _FEATURES and "fma" in _FEATURES
KC = 256        # depth of a packed block: a B micro-panel KC x NR is 32 KB (L1)
MC = 240        # rows of a packed A block: MC x KC is 240 KB (L2)
NC = 1024       # columns of a packed B block: KC x NC is 1 MB (L2)
FEW = 2
FEW_DEPTH = 1 << 18     # ... when the columns' K x W values fit in L2 (1 MB)
PREFETCH = 128


def _vector_type():
    return ir.VectorType(ir.FloatType(), VW)


def _fma(builder):
    vt = _vector_type()
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fmuladd.v{VW}f32")


def _data(context, builder, ty, arr, offset):
    """Pointer to element `offset` of a Numba array value (its data, any layout)."""
    data = cgutils.create_struct_proxy(ty)(context, builder, value=arr).data
    return builder.gep(data, [offset])


def _vector_at(builder, base, index):
    """`base` (a float pointer) + index, as a pointer to a vector."""
    return builder.bitcast(builder.gep(base, [index]), _vector_type().as_pointer())


def _fma_loop(builder, depth, step: int, init: list, body) -> list:
    """Emit `for k in range(0, depth, step)` carrying the vectors `init`: body(k, acc)
    returns the next values. Returns the values after the loop (`init` when depth <= 0)."""
    ity = depth.type
    entry = builder.block
    loop = builder.append_basic_block("fma.loop")
    done = builder.append_basic_block("fma.done")
    builder.cbranch(builder.icmp_signed(">", depth, ir.Constant(ity, 0)), loop, done)
    builder.position_at_end(loop)
    k = builder.phi(ity)
    k.add_incoming(ir.Constant(ity, 0), entry)
    acc = []
    for v in init:
        p = builder.phi(v.type)
        p.add_incoming(v, entry)
        acc.append(p)
    new = body(k, acc)
    k1 = builder.add(k, ir.Constant(ity, step))
    k.add_incoming(k1, builder.block)
    for p, q in zip(acc, new):
        p.add_incoming(q, builder.block)
    end = builder.block
    builder.cbranch(builder.icmp_signed("<", k1, depth), loop, done)
    builder.position_at_end(done)
    out = []
    for v, q in zip(init, new):
        p = builder.phi(v.type)
        p.add_incoming(v, entry)
        p.add_incoming(q, end)
        out.append(p)
    return out


@intrinsic
def prefetch(typingctx, arr, offset):
    """Ask for the cache line holding arr[offset] (flat index; any layout): a hint, never
    a fault, so it may point past the array's end."""
    sig = types.void(arr, offset)

    def codegen(context, builder, signature, args):
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        where = builder.bitcast(_data(context, builder, signature.args[0], *args), i8p)
        pf = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p] + [i32] * 3),
            "llvm.prefetch.p0")
        builder.call(pf, [where, ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


# How far ahead (values) a row's packing asks for its next lines: the rows of a panel
# are a map's size apart, too many streams for the hardware prefetchers to follow, so
# without it each line costs a full cache miss (timed on Zen 3: a 64 -> 64 1x1 conv on
# 160 x 160 took 7.0 ms, 3.8 with it; 2 to 4 lines ahead are alike, 16 is worse)
PACK_AHEAD = 64


def _as_int(builder, v, ty):
    """Integer value v widened (sign-extended) or narrowed to type ty."""
    if v.type.width < ty.width:
        return builder.sext(v, ty)
    return builder.trunc(v, ty) if v.type.width > ty.width else v


def _microkernel_codegen(context, builder, signature, args, offsets=False, extent=None):
    """The MR x NR micro-kernel's body; args (ap, aoff, b, boff, offsets, c, coff, k,
    ldc, add): offsets None for packed B (row k at b[boff + k*NR ..]), else with
    `offsets` an int64 array of each row's offset (b[boff + offsets[k] ..]); `extent`
    (rows, cols) values: only that corner of the C tile is stored (masked)."""
    a_arr, a_off, b_arr, b_off, b_ld, c_arr, c_off, depth, stride, keep = args
    tys = signature.args
    a0 = _data(context, builder, tys[0], a_arr, a_off)
    b0 = _data(context, builder, tys[2], b_arr, b_off)
    c0 = _data(context, builder, tys[5 if b_ld is not None else 4], c_arr, c_off)
    if offsets:
        o0 = _data(context, builder, tys[4], b_ld, ir.Constant(depth.type, 0))
    vt = _vector_type()
    fma = _fma(builder)
    i32, i64 = ir.IntType(32), ir.IntType(64)
    ity = depth.type
    splat = ir.Constant(ir.VectorType(i32, VW), [0] * VW)
    nv = NR // VW

    ldb = ir.Constant(ity, NR)

    def step(kk, acc):
        if offsets:
            brow = builder.gep(b0, [builder.load(builder.gep(o0, [kk]))])
        else:
            brow = builder.gep(b0, [builder.mul(kk, ldb)])
        bv = [builder.load(_vector_at(builder, brow, ir.Constant(i64, v * VW)), align=4)
              for v in range(nv)]
        arow = builder.gep(a0, [builder.mul(kk, ir.Constant(ity, MR))])
        if PREFETCH:    # the weights ahead: one line per step, PREFETCH steps on
            i8p = ir.IntType(8).as_pointer()
            pf = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p] + [i32] * 3),
                "llvm.prefetch.p0")
            ahead = builder.gep(arow, [ir.Constant(i64, PREFETCH * MR)])
            builder.call(pf, [builder.bitcast(ahead, i8p), ir.Constant(i32, 0),
                              ir.Constant(i32, 3), ir.Constant(i32, 1)])
        new = []
        for i in range(MR):
            s = builder.load(builder.gep(arow, [ir.Constant(i64, i)]))
            one = builder.insert_element(ir.Constant(vt, ir.Undefined), s,
                                         ir.Constant(i32, 0))
            bc = builder.shuffle_vector(one, one, splat)
            for v in range(nv):
                new.append(builder.call(fma, [bc, bv[v], acc[i * nv + v]]))
        return new

    zero = ir.Constant(vt, [0.0] * VW)
    res = _fma_loop(builder, depth, 1, [zero] * (MR * nv), step)
    # C is read only when the tile is added to it: a load of the old values before an
    # overwrite would fetch lines from memory for nothing (for outputs written in
    # place, a cache miss per row)
    with builder.if_else(_as_int(builder, keep, ir.IntType(1))) as (adding, storing):
        for add in (True, False):
            with adding if add else storing:
                if extent is not None:
                    _store_masked(builder, c0, stride, add, res, *extent)
                    continue
                for i in range(MR):
                    row = builder.gep(c0, [builder.mul(ir.Constant(stride.type, i), stride)])
                    for v in range(nv):
                        ptr = _vector_at(builder, row, ir.Constant(i64, v * VW))
                        val = res[i * nv + v]
                        if add:
                            val = builder.fadd(builder.load(ptr, align=4), val)
                        builder.store(val, ptr, align=4)
    return context.get_dummy_value()


def _store_masked(builder, c0, stride, add: bool, res, rows, cols):
    """Store (or with `add`, add) the tile's first `rows` rows and `cols` columns only
    (masked vector loads and stores: nothing outside is read or written)."""
    vt = _vector_type()
    i1, i32, i64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
    mt = ir.VectorType(i1, VW)
    vp = vt.as_pointer()
    load = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vt, [vp, i32, mt, vt]), f"llvm.masked.load.v{VW}f32.p0")
    store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vt, vp, i32, mt]),
        f"llvm.masked.store.v{VW}f32.p0")
    cols = _as_int(builder, cols, i32)
    rows = _as_int(builder, rows, i32)
    splat = ir.Constant(ir.VectorType(i32, VW), [0] * VW)
    cv = builder.insert_element(ir.Constant(ir.VectorType(i32, VW), ir.Undefined), cols,
                                ir.Constant(i32, 0))
    cv = builder.shuffle_vector(cv, cv, splat)
    nv = NR // VW
    lanes = [builder.icmp_signed("<", ir.Constant(ir.VectorType(i32, VW),
                                                  list(range(v * VW, (v + 1) * VW))), cv)
             for v in range(nv)]
    none = ir.Constant(mt, [0] * VW)
    zero = ir.Constant(vt, [0.0] * VW)
    align = ir.Constant(i32, 4)
    for i in range(MR):
        row = builder.gep(c0, [builder.mul(ir.Constant(stride.type, i), stride)])
        live = builder.icmp_signed("<", ir.Constant(i32, i), rows)
        for v in range(nv):
            mask = builder.select(live, lanes[v], none)
            ptr = builder.bitcast(builder.gep(row, [ir.Constant(i64, v * VW)]), vp)
            val = res[i * nv + v]
            if add:
                val = builder.fadd(builder.call(load, [ptr, align, mask, zero]), val)
            builder.call(store, [val, ptr, align, mask])


@intrinsic
def _microkernel(typingctx, ap, aoff, bp, boff, c, coff, k, ldc, add):
    """c[coff + i*ldc + j] (+)= sum_k ap[aoff + k*MR + i] * bp[boff + k*NR + j] for the
    MR x NR tile (i < MR, j < NR); `add` keeps what c held."""
    sig = types.void(ap, aoff, bp, boff, c, coff, k, ldc, add)

    def codegen(context, builder, signature, args):
        a, ao, b, bo, c_, co, kk, ld, keep = args
        return _microkernel_codegen(context, builder, signature,
                                    (a, ao, b, bo, None, c_, co, kk, ld, keep))

    return sig, codegen


@intrinsic
def _microkernel_off(typingctx, ap, aoff, b, boff, offsets, c, coff, k, ldc, add, rows,
                     cols):
    """_microkernel with B gathered in place: row k of the tile's B is b[boff +
    offsets[k] .. + NR] (offsets int64): NR consecutive output pixels of a conv read
    straight from its zero-padded input, patch element k being offsets[k] past the
    first pixel's patch origin, no packed copy. Only the first `rows` x `cols` values
    of the C tile are stored (B is read in full: the caller keeps those reads inside b).
    """
    sig = types.void(ap, aoff, b, boff, offsets, c, coff, k, ldc, add, rows, cols)

    def codegen(context, builder, signature, args):
        return _microkernel_codegen(context, builder, signature, args[:10], offsets=True,
                                    extent=args[10:])

    return sig, codegen


@jit
def _pack_a(a, i0, mc, k0, kc, ap):
    # rows i0..i0+mc, depth k0..k0+kc of a into MR-tall k-major panels (zero-padded),
    # reading along whichever axis of a is contiguous
    along_k = a.strides[1] == 4
    for p in range(0, mc, MR):
        base = p * kc
        rows = min(MR, mc - p)
        if along_k:
            for i in range(rows):
                row = a[i0 + p + i, k0:k0 + kc]
                for k in range(kc):
                    ap[base + k * MR + i] = row[k]
        else:
            for k in range(kc):
                o = base + k * MR
                for i in range(rows):
                    ap[o + i] = a[i0 + p + i, k0 + k]
        for i in range(rows, MR):
            for k in range(kc):
                ap[base + k * MR + i] = 0.0


@jit
def _pack_b(b, k0, kc, j0, nc, bp):
    # depth k0..k0+kc, columns j0..j0+nc of b into NR-wide k-major panels (zero-padded),
    # reading along whichever axis of b is contiguous
    along_k = b.strides[0] == 4
    for p in range(0, nc, NR):
        base = p * kc
        cols = min(NR, nc - p)
        if along_k:
            for j in range(cols):
                col = b[k0:k0 + kc, j0 + p + j]
                for k in range(kc):
                    bp[base + k * NR + j] = col[k]
        else:
            for k in range(kc):
                o = base + k * NR
                row = b[k0 + k, j0 + p:j0 + p + cols]
                for j in range(cols):
                    bp[o + j] = row[j]
        for j in range(cols, NR):
            for k in range(kc):
                bp[base + k * NR + j] = 0.0


@jit
def _gemm(a, b, c, accumulate):
    M, K = a.shape
    N = b.shape[1]
    if K == 0:
        if not accumulate:
            c[:, :] = 0.0
        return
    kc0 = min(KC, K)
    ap = np.empty(-(-min(MC, M) // MR) * MR * kc0, np.float32)
    bp = np.empty(-(-min(NC, N) // NR) * NR * kc0, np.float32)
    edge = np.empty(MR * NR, np.float32)
    ldc = c.strides[0] // 4         # c: rows of contiguous values (the kernel needs no more)
    for j0 in range(0, N, NC):
        nc = min(NC, N - j0)
        for k0 in range(0, K, KC):
            kc = min(KC, K - k0)
            add = accumulate or k0 > 0
            _pack_b(b, k0, kc, j0, nc, bp)
            for i0 in range(0, M, MC):
                mc = min(MC, M - i0)
                _pack_a(a, i0, mc, k0, kc, ap)
                for jp in range(0, nc, NR):
                    cols = min(NR, nc - jp)
                    for ip in range(0, mc, MR):
                        rows = min(MR, mc - ip)
                        if rows == MR and cols == NR:
                            _microkernel(ap, ip * kc, bp, jp * kc, c,
                                         (i0 + ip) * ldc + j0 + jp, kc, ldc, add)
                        else:
                            _microkernel(ap, ip * kc, bp, jp * kc, edge, 0, kc, NR, False)
                            for i in range(rows):
                                for j in range(cols):
                                    v = edge[i * NR + j]
                                    if add:
                                        v += c[i0 + ip + i, j0 + jp + j]
                                    c[i0 + ip + i, j0 + jp + j] = v


gemm_into = _gemm     # for Numba code: gemm_into(a, b, c, accumulate), no checks


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, accumulate: bool = False) -> None:
    """c = a @ b, or c += a @ b with `accumulate`; a (M, K), b (K, N) float32 of any
    strides, c (M, N) float32 C-contiguous. Runs on the calling thread (nogil)."""
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2 or b.shape[0] != a.shape[1] \
            or c.shape != (a.shape[0], b.shape[1]):
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} -> {c.shape} do not agree")
    if not c.flags.c_contiguous or c.dtype != np.float32:
        raise ValueError("gemm: c must be a float32 C-contiguous array")
    _gemm(a, b, c, accumulate)


# --- pre-packed operands for the convs ----------------------------------------------------
# A conv's weights (n, K) are packed once (kernels.conv caches them) as ceil(n/MR) panels,
# panel p holding rows p*MR.. as K x MR (k-major, zero rows past n). Its patches are
# packed straight from the input, without an im2col matrix: column panel q of a tile holds
# K x NR values, row r of panel q being NR consecutive columns of the source.

def packed_rows(n: int) -> int:
    """Rows of the packed weights (n rounded up to the micro-tile height)."""
    return -(-n // MR) * MR


def packed_cols(T: int) -> int:
    """Columns of a packed tile (T rounded up to the micro-tile width)."""
    return -(-T // NR) * NR


@jit
def pack_weights(w, ap):
    # w (n, K) -> ap (packed_rows(n) * K,)
    n, K = w.shape
    for p in range(0, n, MR):
        rows = min(MR, n - p)
        base = p * K
        for k in range(K):
            o = base + k * MR
            for i in range(rows):
                ap[o + i] = w[p + i, k]
            for i in range(rows, MR):
                ap[o + i] = 0.0


@jit
def pack_patches(src, row_off, j0, T, oh, ow, pitch, image_stride, bp):
    # bp (packed_cols(T) * K,) <- the patches of batch columns j0..j0+T (output pixel j of
    # the batch: image j // (oh*ow), (oy, ox) within it), zeros past T. Value (r, j) is
    # src[row_off[r] + origin(j)], origin = image * image_stride + oy*pitch + ox: src is
    # the input laid out so that consecutive output pixels of a row read consecutive
    # values (zero-padded, split into phases for strided convs), row_off[r] the offset of
    # patch element r from a patch's origin. Each NR-wide panel is cut into runs along
    # output rows, one contiguous copy per run and patch element.
    K = row_off.shape[0]
    P = oh * ow
    runs = np.empty((NR, 3), np.int64)          # (first column in the panel, origin, length)
    for p in range(0, T, NR):
        cols = min(NR, T - p)
        nr = 0
        t = 0
        while t < cols:
            j = j0 + p + t
            b = j // P
            q = j - b * P
            oy = q // ow
            ox = q - oy * ow
            L = min(cols - t, ow - ox)
            runs[nr, 0] = t
            runs[nr, 1] = b * image_stride + oy * pitch + ox
            runs[nr, 2] = L
            nr += 1
            t += L
        base = p * K
        for r in range(K):
            o = U64(base + r * NR)
            ro = row_off[r]
            if nr == 1 and cols == NR:
                s0 = U64(ro + runs[0, 1])
                for u in range(NR):
                    bp[o + U64(u)] = src[s0 + U64(u)]
                continue
            for e in range(nr):
                d0 = o + U64(runs[e, 0])
                s0 = U64(ro + runs[e, 1])
                for u in range(U64(runs[e, 2])):
                    bp[d0 + u] = src[s0 + u]
            for u in range(cols, NR):
                bp[o + U64(u)] = 0.0


@jit
def pack_patches_t(src, row_off, j0, T, oh, ow, pitch, image_stride, origins, bp):
    # The transpose of pack_patches, for the weight gradient dZ @ patches^T: the K patch
    # rows become packed columns, NR per panel, over the depth of the tile's T pixels.
    # bp (packed_cols(K) * T,): panel q at q*T, pixel t's NR values at q*T + t*NR (zeros
    # past K); origins (>= T,) int64 scratch. Each value is gathered, src[origin(t) +
    # row_off[r]], with the same layout conventions as pack_patches.
    K = row_off.shape[0]
    P = oh * ow
    t = 0
    while t < T:                # the origins, run by run along output rows
        j = j0 + t
        b = j // P
        q = j - b * P
        oy = q // ow
        ox = q - oy * ow
        L = min(T - t, ow - ox)
        o = b * image_stride + oy * pitch + ox
        for u in range(L):
            origins[t + u] = o + u
        t += L
    for q in range(0, K, NR):
        rows = min(NR, K - q)
        base = U64(q * T)
        for t in range(T):
            o = origins[t]
            d0 = base + U64(t * NR)
            for u in range(rows):
                bp[d0 + U64(u)] = src[U64(o + row_off[q + u])]
            for u in range(rows, NR):
                bp[d0 + U64(u)] = 0.0


@jit
def gemm_packed(ap, aoff, p0, panels, bp, boff, K, c, coff, ldc, W, add=False):
    # c[coff + i*ldc + j] for i < panels*MR, j < W (a multiple of NR) (+)= rows p0*MR.. of
    # the packed weights at ap[aoff..] @ the packed columns at bp[boff..]; overwritten
    # unless `add`
    if W <= FEW * NR and K * W <= FEW_DEPTH:
        # few columns (small maps at batch 1): the weights are the traffic, so each panel
        # of them is read once, front to back (prefetch-friendly), over the whole depth,
        # while the columns stay in L2
        for i in range(panels):
            for q in range(0, W, NR):
                _microkernel(ap, aoff + (p0 + i) * K * MR, bp, boff + q * K, c,
                             coff + i * MR * ldc + q, K, ldc, add)
        return
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        for q in range(0, W, NR):
            for i in range(panels):
                _microkernel(ap, aoff + (p0 + i) * K * MR + k0 * MR, bp, boff + q * K + k0 * NR,
                             c, coff + i * MR * ldc + q, kc, ldc, add or k0 > 0)
    if K == 0 and not add:
        for i in range(panels * MR):
            for j in range(W):
                c[coff + i * ldc + j] = 0.0


# Row k of a packed B panel lies k * NR values in: the offsets _microkernel_off takes to
# read a packed panel (for its masked stores)
_PANEL_ROWS = np.arange(KC, dtype=np.int64) * NR


@jit
def gemm_inplace(ap, p0, m, K, b, boff, ldb, c, coff, ldc, T, edge, chunk):
    # c[coff + i*ldc + j] = sum_k w[p0*MR + i, k] * b[boff + k*ldb + j] for i < m, j < T:
    # the packed weights' rows from panel p0 on times B (a 1x1 conv's input, rows ldb
    # apart), written into C in place (the conv's output: no tile buffer, no second
    # pass). B is packed one NR-wide column panel at a time into `edge`, where it stays
    # in L1 while the weights pass (read in place, the rows of a map whose size is a
    # multiple of 4 KB would all fall in one L1 set). Nothing outside the m x T values
    # is written: a micro-tile running past m rows or T columns is stored masked.
    # edge: (>= NR * KC,) scratch. The sum over k runs in KC blocks
    # added in turn, as gemm_packed's (the same numbers); the filters go in chunks of
    # `chunk` panels, whose KC-deep weights stay in L2 while the column panels pass.
    panels = -(-m // MR)
    eb = edge[:KC * NR]
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        add = k0 > 0
        for c0 in range(0, panels, chunk):
            c1 = min(panels, c0 + chunk)
            for q in range(0, T, NR):
                cols = min(NR, T - q)         # the panel packed, zero-padded past T
                for k in range(kc):
                    src = boff + (k0 + k) * ldb + q
                    prefetch(b, src + PACK_AHEAD)
                    if cols == NR:
                        for u in range(NR):
                            eb[k * NR + u] = b[src + u]
                        continue
                    for u in range(cols):
                        eb[k * NR + u] = b[src + u]
                    for u in range(cols, NR):
                        eb[k * NR + u] = 0.0
                for i in range(c0, c1):
                    a0 = (p0 + i) * K * MR + k0 * MR
                    rows = min(MR, m - i * MR)
                    dst = coff + i * MR * ldc + q
                    if rows == MR and cols == NR:
                        _microkernel(ap, a0, eb, 0, c, dst, kc, ldc, add)
                    else:           # the masked stores keep to the m x T values
                        _microkernel_off(ap, a0, eb, 0, _PANEL_ROWS, c, dst, kc, ldc, add,
                                         rows, cols)


@jit
def gemm_planes(ap, astride, p0, panels, bp, bstride, K, c, cstride, ldc, W, planes):
    # gemm_packed for `planes` independent products (Winograd's 16), plane e of each
    # operand starting e * stride values in
    for e in range(planes):
        gemm_packed(ap, e * astride, p0, panels, bp, e * bstride, K, c, e * cstride, ldc, W)


# --- C (+)= A @ B^T with both operands read along their rows -------------------------------
# The weight gradient of a conv, dW += dZ cols^T, sums over pixels, the contiguous axis of
# both operands. Rather than transposing one of them into panels, this kernel keeps an
# RA x RB block of dot products in vector registers, each lane summing every VW-th term,
# and adds the lanes up in order at the end of a depth chunk.

def _make_dot(ra: int, rb: int):
    @intrinsic
    def dot(typingctx, a, aoff, lda, b, boff, ldb, depth, out, ooff, ldo):
        """out[ooff + i*ldo + j*VW + lane] += sum over k < depth (a multiple of VW) with
        k % VW == lane of a[aoff + i*lda + k] * b[boff + j*ldb + k], i < ra, j < rb."""
        sig = types.void(a, aoff, lda, b, boff, ldb, depth, out, ooff, ldo)

        def codegen(context, builder, signature, args):
            a_arr, a_off, a_ld, b_arr, b_off, b_ld, kdep, o_arr, o_off, o_ld = args
            tys = signature.args
            ity = kdep.type

            def at(i: int, arr, off, ld, row: int):
                return _data(context, builder, tys[i], arr, builder.add(
                    off, builder.mul(ir.Constant(ity, row), ld)))

            arows = [at(0, a_arr, a_off, a_ld, i) for i in range(ra)]
            brows = [at(3, b_arr, b_off, b_ld, j) for j in range(rb)]
            o0 = _data(context, builder, tys[7], o_arr, o_off)
            slots = [_vector_at(builder, o0, builder.add(
                builder.mul(ir.Constant(ity, i), o_ld), ir.Constant(ity, j * VW)))
                for i in range(ra) for j in range(rb)]
            fma = _fma(builder)

            def step(kk, acc):
                av = [builder.load(_vector_at(builder, r, kk), align=4) for r in arows]
                bv = [builder.load(_vector_at(builder, r, kk), align=4) for r in brows]
                return [builder.call(fma, [av[i], bv[j], acc[i * rb + j]])
                        for i in range(ra) for j in range(rb)]

            init = [builder.load(q, align=4) for q in slots]
            for v, q in zip(_fma_loop(builder, kdep, VW, init, step), slots):
                builder.store(v, q, align=4)
            return context.get_dummy_value()

        return sig, codegen
    return dot


RA, RB = (4, 6) if VW == 16 else (3, 4)
_dot_block = _make_dot(RA, RB)
_dot_row = _make_dot(1, RB)
_dot_col = _make_dot(RA, 1)
_dot_one = _make_dot(1, 1)
DEPTH = 512     # terms per chunk: a block's rows of both operands stay in L1


@jit
def _gemm_nt(a, b, c, lanes):
    # lanes (M*N*VW,) zeroed: per (i, j) VW partial sums, added up in order at the end
    # a, b: rows of contiguous values, lda / ldb apart
    M, K = a.shape
    N = b.shape[0]
    fa, lda = a, a.strides[0] // 4
    fb, ldb = b, b.strides[0] // 4
    kv = K // VW * VW
    Mb = M - M % RA
    Nb = N - N % RB
    lo = N * VW
    # per depth chunk: each block of RB rows of b stays in L1 while the rows of a pass
    for k0 in range(0, kv, DEPTH):
        d = min(DEPTH, kv - k0)
        for j0 in range(0, Nb, RB):
            for i0 in range(0, Mb, RA):
                _dot_block(fa, i0 * lda + k0, lda, fb, j0 * ldb + k0, ldb, d, lanes,
                           (i0 * N + j0) * VW, lo)
            for i0 in range(Mb, M):
                _dot_row(fa, i0 * lda + k0, lda, fb, j0 * ldb + k0, ldb, d, lanes,
                         (i0 * N + j0) * VW, lo)
        for j0 in range(Nb, N):
            for i0 in range(0, Mb, RA):
                _dot_col(fa, i0 * lda + k0, lda, fb, j0 * ldb + k0, ldb, d, lanes,
                         (i0 * N + j0) * VW, lo)
            for i0 in range(Mb, M):
                _dot_one(fa, i0 * lda + k0, lda, fb, j0 * ldb + k0, ldb, d, lanes,
                         (i0 * N + j0) * VW, lo)
    for i in range(M):
        for j in range(N):
            base = (i * N + j) * VW
            s = lanes[base]
            for u in range(1, VW):
                s += lanes[base + u]
            for k in range(kv, K):
                s += a[i, k] * b[j, k]
            c[i, j] += s


gemm_nt_into = _gemm_nt     # for Numba code: c += a @ b.T, with lanes zeroed (c.size*VW)


def gemm_nt(a: np.ndarray, b: np.ndarray, c: np.ndarray, accumulate: bool = False) -> None:
    """c = a @ b.T (c += a @ b.T with `accumulate`): a (M, K), b (N, K), c (M, N), all
    float32 C-contiguous. Runs on the calling thread (nogil)."""
    for name, v in (("a", a), ("b", b), ("c", c)):
        if v.ndim != 2 or v.dtype != np.float32 or not v.flags.c_contiguous:
            raise ValueError(f"gemm_nt: {name} must be a 2-D float32 C-contiguous array")
    if b.shape[1] != a.shape[1] or c.shape != (a.shape[0], b.shape[0]):
        raise ValueError(f"gemm_nt: shapes {a.shape} @ {b.shape}.T -> {c.shape} do not agree")
    if not accumulate:
        c[...] = 0.0
    _gemm_nt(a, b, c, np.zeros(c.size * VW, np.float32))
