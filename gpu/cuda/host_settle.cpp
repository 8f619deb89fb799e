// host_settle.cpp: settle.cuh compiled for the CPU (build.rs, with g++), so that the exact code
// the kernels run can be checked against the engine's CpuSettler on a machine without a GPU.
//
// Owns: the host loops standing in for the kernels' grids, in the kernels' launch order.
// Never: any settlement math of its own, and no checks: the Rust caller (gpu/src/host.rs)
// validates every array and length first.
#include "settle.cuh"

// The host's summing policy: one thread, so a plain add (the kernels use atomicAdd).
struct TallyPlainAdd {
    static inline void add(tally_u64* to, tally_u64 value) {
        *to += value;
    }
};

// For one inference alone: writes the rewards, no totals.
struct TallyRewardOnly {
    tally_u64* reward;
    void operator()(tally_u32 j, tally_u64 value) {
        reward[j] = value;
    }
};

extern "C" {

// floor(n / w) through the reciprocal, exactly as the kernel divides (needs w >= 1).
tally_u64 tally_host_div(tally_u64 n, tally_u64 w) {
    return tally_div(n, w, tally_reciprocal(w));
}

// One inference (settlement.md §3): writes `reward[0..count]`, returns the unassigned pool.
tally_u64 tally_host_divide_pool(tally_u64 pool, const tally_u32* contribution,
                                 const tally_u32* weight, tally_u32 count,
                                 const tally_u8* revoked, tally_u64* reward) {
    TallyEntries e = {contribution, weight, count};
    TallyRewardOnly credit = {reward};
    return tally_divide_pool(pool, e, revoked, credit);
}

// A whole batch, as the two kernels would do it: zeroes the totals, then one "thread" per
// inference, then one per contribution.
void tally_host_settle_batch(const tally_u32* entry_start, const tally_u64* pool,
                             const tally_u32* contribution, const tally_u32* weight,
                             const tally_u8* revoked, const tally_u32* contributor,
                             tally_u32 inferences, tally_u32 contributions, tally_u64 accounts,
                             tally_u64* reward, tally_u64* unassigned,
                             tally_u64* contribution_total, tally_u64* account_total) {
    for (tally_u32 c = 0; c < contributions; ++c) {
        contribution_total[c] = 0;
    }
    for (tally_u64 a = 0; a < accounts; ++a) {
        account_total[a] = 0;
    }
    TallyBatch b = {entry_start, pool,   contribution, weight,
                    revoked,     reward, unassigned,   contribution_total};
    for (tally_u32 i = 0; i < inferences; ++i) {
        tally_settle_inference<TallyPlainAdd>(b, i);
    }
    for (tally_u32 c = 0; c < contributions; ++c) {
        tally_credit_account<TallyPlainAdd>(contribution_total, contributor, account_total, c);
    }
}

}  // extern "C"
