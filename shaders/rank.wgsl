// Pass 2 of the exact metrics on the device: every negative (normal) pixel
// of a score range is filed into one of the 2m+1 slots of the split's m
// sorted distinct positive keys (slot 2i: strictly between keys[i-1] and
// keys[i]; 2i+1: equal to keys[i]; 2m: above all), counted with u32 atomics.
// Counts are sums, so the result does not depend on scheduling. The host
// (src/scores/gpu/rank.rs) widens them to u64 before any can overflow.
//
// The lookup is the CPU engine's (src/metrics/engine.rs, RankTable), on the
// same three arrays, packed into `table`:
//   table[0 .. 65536)                       desc[b] = off << 5 | s, b = key >> 16
//   table[bounds_off ..)                    bounds: first key index per sub-bucket
//   table[keys_off .. keys_off + m + 4)     keys, then 4 pads 0xffffffff
// Scores are read as raw bits (never as floats: no flush-to-zero, no NaN
// canonicalisation can change a key).

const WINDOW: u32 = 4u;
// Workgroup-local histogram size of `main_local` (16 000 bytes, within the
// 16 352 bytes every adapter offers).
const LOCAL_SLOTS: u32 = 4000u;

struct Params {
    // pixels of this dispatch
    n: u32,
    // first pixel's element index into `scores`
    score_base: u32,
    // first pixel's byte index into `labels`
    label_base: u32,
    // distinct positive keys
    m: u32,
    bounds_off: u32,
    keys_off: u32,
    // invocations in the dispatch (grid stride)
    stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// f32 score bits
@group(0) @binding(1) var<storage, read> scores: array<u32>;
// label codes, 4 per word, little-endian: pixel i is byte i; 0 = normal
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read_write> counts: array<atomic<u32>>;

var<workgroup> hist: array<atomic<u32>, LOCAL_SLOTS>;

// The order-preserving f32 -> u32 map of metrics::key (-0.0 counts as 0.0).
fn key_of(bits: u32) -> u32 {
    var b = bits;
    if (b == 0x80000000u) {
        b = 0u;
    }
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

fn slot_of(x: u32) -> u32 {
    let d = table[x >> 16u];
    let s = d & 31u;
    var j = p.bounds_off + (d >> 5u);
    if (s > 0u) {
        j += (x << 16u) >> (32u - s);
    }
    let lo = table[j];
    let hi = table[j + 1u];
    var i = lo;
    if (hi - lo <= WINDOW) {
        // keys past the sub-bucket are > x, or pads
        for (var t = 0u; t < WINDOW; t++) {
            i += select(0u, 1u, table[p.keys_off + lo + t] < x);
        }
    } else {
        var a = lo;
        var b = hi;
        while (a < b) {
            let mid = a + (b - a) / 2u;
            if (table[p.keys_off + mid] < x) {
                a = mid + 1u;
            } else {
                b = mid;
            }
        }
        i = a;
    }
    var eq = 0u;
    if (i < p.m && table[p.keys_off + i] == x) {
        eq = 1u;
    }
    return 2u * i + eq;
}

fn is_normal(i: u32) -> bool {
    let li = p.label_base + i;
    return ((labels[li >> 2u] >> ((li & 3u) * 8u)) & 0xffu) == 0u;
}

// Any number of slots: global atomics.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < p.n; i += p.stride) {
        if (is_normal(i)) {
            atomicAdd(&counts[slot_of(key_of(scores[p.score_base + i]))], 1u);
        }
    }
}

// 2m+1 <= LOCAL_SLOTS: a workgroup histogram first (heavily tied scores
// would otherwise crowd a few global counters), then one atomic per
// non-zero slot and workgroup.
@compute @workgroup_size(256)
fn main_local(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let nslots = 2u * p.m + 1u;
    for (var k = li; k < nslots; k += 256u) {
        atomicStore(&hist[k], 0u);
    }
    workgroupBarrier();
    for (var i = gid.x; i < p.n; i += p.stride) {
        if (is_normal(i)) {
            atomicAdd(&hist[slot_of(key_of(scores[p.score_base + i]))], 1u);
        }
    }
    workgroupBarrier();
    for (var k = li; k < nslots; k += 256u) {
        let c = atomicLoad(&hist[k]);
        if (c != 0u) {
            atomicAdd(&counts[k], c);
        }
    }
}
