// bitsandbytes' AdamW (bitsandbytes.optim.AdamW, which the HF Trainer builds for --optim
// adamw_bnb_8bit, adamw_8bit, paged_adamw_8bit and paged_adamw_32bit), op for op as bitsandbytes'
// CPU kernels compute it (bitsandbytes 0.50, backends/cpu/ops.py), in ATen on any device.
// At step t, with c1 = 1 - b1^t, c2 = sqrt(1 - b2^t):
//   m <- m * b1 + (1 - b1) g;   v <- v * b2 + (1 - b2) g^2;   p <- p * (1 - lr * wd) when wd > 0
//   32-bit state: p <- p + (-lr * c2 / c1) * m / (sqrt(v) + eps * c2)
//   8-bit state:  p <- p - (lr / c1) * m / (sqrt(v) / c2 + eps), m and v dequantized before and
//                 quantized after, blockwise (256 elements a block; m with the signed dynamic map,
//                 v with the unsigned one: quant::EightBitBlockwise)
// 8-bit state only for tensors of at least min_8bit_size (4096) elements, as bitsandbytes keeps it,
// and never for an embedding table (keeps_32bit_state).
// "paged" puts bitsandbytes' state in CUDA unified memory; here it stays in device memory. On a
// GPU the codes are the CPU quantizer's; bitsandbytes' CUDA kernel may round a value next to a
// bin edge the other way.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "optim/adamw.h"
#include "quant/eight_bit.h"

namespace ftl::optim {

// The HF Trainer keeps nn.Embedding weights in 32-bit state under an 8-bit optimizer
// (Trainer.create_optimizer registers a bitsandbytes module override): the decoder's embed_tokens
// (a tied head is that tensor).
bool keeps_32bit_state(const std::string& name);

class BnbAdamW {
public:
    // `params` and `trainer_groups` as AdamW's; `options.fused` is not used. `eight_bit`: the
    // 8-bit optimizers (else paged_adamw_32bit's 32-bit state).
    BnbAdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options, bool trainer_groups,
             bool eight_bit);

    void step(double lr);  // every parameter that has a gradient
    void zero_grad();
    int64_t steps() const { return step_; }

    // state1.<name>, state2.<name> (fp32, or uint8 codes with absmax1.<name>, absmax2.<name>) and
    // "step"; load_state throws naming a missing or misshapen entry.
    std::vector<std::pair<std::string, at::Tensor>> state() const;
    void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state);

    static constexpr int64_t kMin8bitSize = 4096;
    static constexpr int64_t kBlocksize = 256;

private:
    struct Moments {
        at::Tensor state1, state2;   // fp32 like the parameter, or uint8 codes
        at::Tensor absmax1, absmax2;  // 8-bit only: fp32 [blocks]
        bool eight_bit() const { return absmax1.defined(); }
    };
    void update_32bit(at::Tensor& p, const at::Tensor& grad, Moments& m, double lr, double weight_decay) const;
    void update_8bit(at::Tensor& p, const at::Tensor& grad, Moments& m, double lr, double weight_decay) const;

    std::vector<std::pair<std::string, at::Tensor>> params_;
    std::vector<Moments> moments_;
    std::vector<bool> decays_;
    AdamWOptions options_;
    std::optional<quant::EightBitBlockwise> signed_code_, unsigned_code_;
    int64_t step_ = 0;
};

}  // namespace ftl::optim
