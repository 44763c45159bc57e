// softmax.cuh — the online softmax's per-tile step shared by attention.cu and attention_sm90.cu, so
// both handle masked rows the same way. A thread holds two rows (an mma / wgmma accumulator
// fragment's g and g + 8), each spread over the 4 threads of its quad; scores are in base 2 with
// scale · log2(e) = `sl2` folded in.
#pragma once

#include "device.cuh"

// `mx`: this thread's running max of each row, including the new tile's scores. Reduces it over
// the quad and moves the rows on: `shift` = the new max · sl2, the exponent's offset for the new
// scores (0 while every key so far is masked, so p = exp2(-inf) = 0, never NaN); `alpha` = the
// rescale of what was summed before (0 from m = -inf); m = the new max; l *= alpha.
__device__ __forceinline__ void online_softmax_rows(float (&mx)[2], float (&m)[2], float (&l)[2], float sl2,
                                                    float (&shift)[2], float (&alpha)[2]) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
        mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 1));
        mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 2));
        shift[rr] = mx[rr] == -INFINITY ? 0.f : mx[rr] * sl2;  // all masked so far: p = 0, no NaN
        alpha[rr] = exp2f(fmaf(m[rr], sl2, -shift[rr]));       // m = -inf -> 0
        m[rr] = mx[rr];
        l[rr] *= alpha[rr];
    }
}
