// settle_kernels.cu: the two settlement kernels, compiled at run time by NVRTC (gpu/src/nvrtc.rs
// passes settle.cuh as a named header) for the device's own compute capability.
//
// Owns: the launch geometry's view of the work (one thread per inference, one per
// contribution) and the atomic summing policy. Never: any settlement math of its own; that is
// settle.cuh's, shared with the host build the property tests check.
//
// Launch order on one stream (gpu/src/resident.rs): zero contribution_total and account_total,
// tally_settle_inferences, then tally_account_totals (it reads the finished contribution totals).
#include "settle.cuh"

// u64 atomicAdd on global memory: one native instruction on sm_60 and later (Hopper included).
struct TallyAtomicAdd {
    static __device__ __forceinline__ void add(tally_u64* to, tally_u64 value) {
        atomicAdd(to, value);
    }
};

// This thread's index in a one-dimensional grid, in 64 bits: the 32-bit product of block index
// and block size wraps when the item count is near 2^32.
__device__ __forceinline__ tally_u64 tally_thread_index() {
    return (tally_u64)blockIdx.x * blockDim.x + threadIdx.x;
}

// One thread per inference: writes each entry's reward and the inference's unassigned pool,
// and adds every reward to its contribution's total.
extern "C" __global__ void tally_settle_inferences(
    const tally_u32* entry_start, const tally_u64* pool, const tally_u32* contribution,
    const tally_u32* weight, const tally_u8* revoked, tally_u64* reward,
    tally_u64* unassigned, tally_u64* contribution_total, tally_u32 inferences) {
    tally_u64 i = tally_thread_index();
    if (i >= inferences) {
        return;
    }
    TallyBatch b = {entry_start, pool,       contribution,      weight,
                    revoked,     reward,     unassigned,        contribution_total};
    tally_settle_inference<TallyAtomicAdd>(b, (tally_u32)i);
}

// One thread per contribution: adds its total to its contributor account's total.
extern "C" __global__ void tally_account_totals(
    const tally_u64* contribution_total, const tally_u32* contributor, tally_u64* account_total,
    tally_u32 contributions) {
    tally_u64 c = tally_thread_index();
    if (c >= contributions) {
        return;
    }
    tally_credit_account<TallyAtomicAdd>(contribution_total, contributor, account_total,
                                         (tally_u32)c);
}
