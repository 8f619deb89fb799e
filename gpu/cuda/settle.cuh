// settle.cuh: the per-inference settlement math of settlement.md §3, exactly as the engine's
// `divide_pool` does it, written once for both the GPU (NVRTC) and the host (g++ through
// build.rs, where the property tests compare it with the engine's CPU settler).
//
// Owns: the pool division of one inference, the 64-bit division it needs, and the bodies of
// the two kernels' loops (one inference; one contribution). The kernels in settle_kernels.cu
// and the host wrapper in host_settle.cpp are thin loops around these bodies, so the code the
// host tests check is the code the GPU runs; only the `Add` policy (atomic or plain) differs.
//
// Never: floating point, allocation, the C or C++ library (NVRTC has neither), reading an
// index it was not given by the caller's validated arrays (the Rust side checks every array
// with `SettleInput::check` before any of this runs).
#ifndef TALLY_SETTLE_CUH
#define TALLY_SETTLE_CUH

#if defined(__CUDACC__)
#define TALLY_HD __host__ __device__ __forceinline__
#else
#define TALLY_HD inline
#endif

typedef unsigned long long tally_u64;
typedef unsigned int tally_u32;
typedef unsigned char tally_u8;

static_assert(sizeof(tally_u64) == 8 && sizeof(tally_u32) == 4 && sizeof(tally_u8) == 1,
              "the Rust side passes u64, u32 and u8 arrays");

// The engine's limits (engine/src/settle.rs): a pool is at most MAX_FEE = 2^40, a weight at
// most WEIGHT_SCALE = 10^6 (< 2^20), an inference has at most MAX_ENTRIES = 1024 entries.
// Hence a product pool * weight is < 2^60 and a weight total W is <= 1024 * 10^6 < 2^30.
#define TALLY_POOL_MAX (1ULL << 40)
#define TALLY_WEIGHT_MAX 1000000U
#define TALLY_ENTRIES_MAX 1024U
static_assert(TALLY_POOL_MAX * TALLY_WEIGHT_MAX < (1ULL << 60), "tally_div needs n < 2^60");
static_assert((tally_u64)TALLY_ENTRIES_MAX * TALLY_WEIGHT_MAX < (1ULL << 30),
              "a weight total must stay below 2^30");

// The high 64 bits of the 128-bit product a * b.
TALLY_HD tally_u64 tally_mulhi(tally_u64 a, tally_u64 b) {
#if defined(__CUDA_ARCH__)
    return __umul64hi(a, b);
#else
    return (tally_u64)(((unsigned __int128)a * b) >> 64);
#endif
}

// floor((2^64 - 1) / w): the reciprocal of one inference's weight total, computed once per
// inference so that each entry's share costs a multiply-high instead of a 64-bit division
// (which GPUs do in software, some tens of instructions). Requires w >= 1.
TALLY_HD tally_u64 tally_reciprocal(tally_u64 w) {
    return ~0ULL / w;
}

// floor(n / w) for n < 2^60 and 1 <= w < 2^32, given m = tally_reciprocal(w).
//
// Why it is exact. Let Q = floor(n / w). From m = floor((2^64 - 1) / w):
//   m * w <= 2^64 - 1 < 2^64, so m < 2^64 / w, and
//   m * w > 2^64 - 1 - w, so m >= (2^64 - w) / w = 2^64 / w - 1.
// With q = floor(n * m / 2^64) (the multiply-high):
//   n * m / 2^64 < n / w, so q <= Q;
//   n * m / 2^64 >= n / w - n / 2^64 > n / w - 1/16 (as n < 2^60), and n / w >= Q, so
//   n * m / 2^64 > Q - 1, so q >= Q - 1.
// So q is Q or Q - 1, and r = n - q * w (no overflow: q * w <= n) is below 2 * w: one
// correction step (r >= w -> q + 1) gives Q exactly. The host property tests check this
// against Rust's `/` at the extremes (w = 1, w near 2^30, n near 2^60).
TALLY_HD tally_u64 tally_div(tally_u64 n, tally_u64 w, tally_u64 m) {
    tally_u64 q = tally_mulhi(n, m);
    if (n - q * w >= w) {
        q += 1;
    }
    return q;
}

// Whether an entry takes part in the division: weight > 0 and its contribution not revoked.
TALLY_HD bool tally_valid(tally_u32 weight, tally_u32 contribution, const tally_u8* revoked) {
    return weight > 0 && revoked[contribution] == 0;
}

// One inference's entries: `count` parallel elements of `contribution` and `weight`.
struct TallyEntries {
    const tally_u32* contribution;
    const tally_u32* weight;
    tally_u32 count;
};

// The valid weight total W and the first entry with the largest valid weight (`top`).
// W == 0 means no entry is valid (then `top` is meaningless).
struct TallyTotal {
    tally_u64 weight;
    tally_u32 top;
};

TALLY_HD TallyTotal tally_total(TallyEntries e, const tally_u8* revoked) {
    TallyTotal t = {0, 0};
    tally_u32 top_weight = 0;
    for (tally_u32 j = 0; j < e.count; ++j) {
        tally_u32 w = e.weight[j];
        if (!tally_valid(w, e.contribution[j], revoked)) {
            continue;
        }
        t.weight += w;
        // Strictly greater: the first of several equal top weights wins the dust.
        if (w > top_weight) {
            top_weight = w;
            t.top = j;
        }
    }
    return t;
}

// settlement.md §3 for one inference. Calls `credit(j, reward)` exactly once for every entry
// j (0 for an invalid entry; the top entry last, with its dust) and returns the part of `pool`
// that goes to $protocol: all of it when no entry is valid, else 0.
template <class Credit>
TALLY_HD tally_u64 tally_divide_pool(tally_u64 pool, TallyEntries e, const tally_u8* revoked,
                                     Credit& credit) {
    TallyTotal total = tally_total(e, revoked);
    if (total.weight == 0) {
        for (tally_u32 j = 0; j < e.count; ++j) {
            credit(j, 0);
        }
        return pool;
    }
    tally_u64 m = tally_reciprocal(total.weight);
    tally_u64 given = 0;
    tally_u64 top_share = 0;
    for (tally_u32 j = 0; j < e.count; ++j) {
        tally_u32 w = e.weight[j];
        tally_u64 share = tally_valid(w, e.contribution[j], revoked)
                              ? tally_div(pool * (tally_u64)w, total.weight, m)
                              : 0;
        given += share;
        if (j == total.top) {
            top_share = share;
        } else {
            credit(j, share);
        }
    }
    credit(total.top, top_share + (pool - given));
    return 0;
}

// The arrays of one batch that the inference kernel reads and writes (engine/src/settle.rs
// `SettleInput` and `SettleOutput`).
struct TallyBatch {
    const tally_u32* entry_start;  // inferences + 1
    const tally_u64* pool;         // inferences
    const tally_u32* contribution; // entries
    const tally_u32* weight;       // entries
    const tally_u8* revoked;       // contributions
    tally_u64* reward;             // entries
    tally_u64* unassigned;         // inferences
    tally_u64* contribution_total; // contributions, zeroed before the first kernel
};

// Writes an entry's reward and adds it to its contribution's total. `Add` is the summing
// policy: an atomic add on the GPU (many inferences share a contribution), a plain one on the
// host. Integer sums are order independent, so both give the same totals.
template <class Add>
struct TallyCredit {
    const TallyBatch* b;
    tally_u32 first;
    TALLY_HD void operator()(tally_u32 j, tally_u64 reward) {
        b->reward[first + j] = reward;
        if (reward != 0) {
            Add::add(&b->contribution_total[b->contribution[first + j]], reward);
        }
    }
};

// The body of the first kernel: settles inference `i`.
template <class Add>
TALLY_HD void tally_settle_inference(const TallyBatch& b, tally_u32 i) {
    tally_u32 first = b.entry_start[i];
    TallyEntries e = {b.contribution + first, b.weight + first, b.entry_start[i + 1] - first};
    TallyCredit<Add> credit = {&b, first};
    b.unassigned[i] = tally_divide_pool(b.pool[i], e, b.revoked, credit);
}

// The body of the second kernel: adds contribution `c`'s total (final: the first kernel has
// finished) to its contributor account's total, zeroed before the second kernel.
template <class Add>
TALLY_HD void tally_credit_account(const tally_u64* contribution_total,
                                   const tally_u32* contributor, tally_u64* account_total,
                                   tally_u32 c) {
    tally_u64 total = contribution_total[c];
    if (total != 0) {
        Add::add(&account_total[contributor[c]], total);
    }
}

#endif  // TALLY_SETTLE_CUH
