// ZeRO stage 3 for the frozen weights (with LoRA: the whole base model) or, for full
// fine-tuning, the trainable ones: each rank keeps only its slice of every part (the embeddings,
// each decoder layer, the final norm, the head), laid out by FlatPartition; acquire(part)
// all-gathers the part into a fresh buffer whose views become the model's tensors, release(part)
// drops them (the buffer is freed once no autograd graph holds it). Resident parameter memory per
// rank: 1/world_size of the partitioned weights, plus the parts being used. With LoRA the
// adapters stay whole on every rank.
// Trainable partitions: each slice is an fp32 leaf that requires grad; the gather is a step of
// the autograd graph whose backward reduce-scatters the part's gradient (summed over ranks) into
// the slices' .grad(), so no rank ever holds a whole gradient longer than its part's backward.
// zero::PartitionedAdamW steps on the slices through sharding().
// 4-bit weights (QLoRA) keep their storage dtype: a part is flattened per dtype, one all-gather
// each, so with bfloat16 quant storage the packed codes travel with the 16-bit tensors and with
// uint8 storage in a second buffer. Their quantisation state (absmax) stays whole on every rank,
// as DeepSpeed leaves bitsandbytes' QuantState outside its partitions.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "model/decoder.h"
#include "io/direct_file.h"
#include "zero/flat_partition.h"
#include "zero/sharding.h"
#include "zero/transfer_stream.h"
#include "zero/slice_swap.h"

namespace ftl::zero {

// DeepSpeed's offload_param: cpu (host memory) or nvme (a swap file in nvme_path).
struct ParameterOffload {
    bool nvme = false;
    std::string nvme_path;
    io::AioOptions aio;
    // offload_param.max_in_cpu (nvme): elements of this rank's slices kept in host memory, the
    // parts first in forward order that fit; the rest live on NVMe.
    int64_t max_in_cpu = 1'000'000'000;
};

// The types a decoder's slices are kept in: `base` for every tensor except, when given, the
// decoder layers' linear weights and biases (`linears`) and an untied lm_head (`head`): LoRA under
// bf16/fp16 keeps its frozen linears in the autocast type, so they are gathered in half the
// bytes. Packed 4-bit codes keep their storage type.
struct SliceTypes {
    SliceTypes(at::ScalarType base_type = at::kFloat) : base(base_type) {}  // NOLINT: a plain type converts
    at::ScalarType base;
    std::optional<at::ScalarType> linears, head;
};

// Which of the model's tensors are partitioned: the frozen ones (requires_grad false; with LoRA)
// or the trainable ones (requires_grad true; full fine-tuning).
enum class Partitioned { kFrozen, kTrainable };

class PartitionedWeights : public model::WeightResidency {
public:
    // Takes the frozen tensors (requires_grad false) out of `model` and keeps this rank's slices
    // in `types` on `device`, copying only the elements of its own slices (from mapped files, only
    // those pages are read); the model's tensors stay undefined until acquired. Tensors of fewer
    // than `persistence_threshold` elements (stage3_param_persistence_threshold: norms, biases)
    // stay whole on every rank, converted, and are never gathered. Collective-free; `comm` null =
    // one rank. `prepare_layer(i)`, when given, runs on decoder layer i just before its slices
    // are taken (QLoRA quantises the layer there, so no rank holds the whole model unquantised).
    // With `offload` (offload_param) the slices stay in host memory (pinned with CUDA), or on
    // NVMe (zero/slice_swap.h, the next part read ahead), and each is copied to `device` when its
    // part is gathered. `which` kTrainable (full fine-tuning) takes the tensors that require grad
    // instead, all of them partitioned (no persistence threshold, no offload: fp32 slices on
    // `device`, types must be all kFloat).
    PartitionedWeights(model::CausalLM& model, dist::Comm* comm, int rank, int world_size, const SliceTypes& types,
                       const at::Device& device, int64_t persistence_threshold = 0,
                       const std::function<void(int layer)>& prepare_layer = {},
                       const std::optional<ParameterOffload>& offload = std::nullopt,
                       Partitioned which = Partitioned::kFrozen);
    ~PartitionedWeights() override;

    // Any model's frozen weights, listed as parts in forward order (Seq2SeqLM::weight_parts()):
    // the same slicing, persistence threshold and offload; no tied head, no preparation. The
    // read-ahead (offload_param nvme) guesses the next part in the list, or in backward the one
    // before.
    PartitionedWeights(const std::vector<model::WeightPart>& parts, dist::Comm* comm, int rank, int world_size,
                       at::ScalarType dtype, const at::Device& device, int64_t persistence_threshold = 0,
                       const std::optional<ParameterOffload>& offload = std::nullopt);

    // Prefetch (DeepSpeed's stage3_prefetch_bucket_size > 0): after gathering a part, start
    // gathering the one expected next (the decoder family's known order; any other model's list
    // order, or in backward the part before)
    // (Comm::start_all_gather; with offload_param, on one rank too, its upload from host memory on
    // a side stream: zero/transfer_stream.h) while this one computes, unless the two together exceed
    // `max_live_parameters` elements (stage3_max_live_parameters). A wrong guess costs one gather
    // every rank makes and drops. Deviation: the unit is a part (a decoder layer), one ahead,
    // whatever the bucket size.
    void enable_prefetch(int64_t max_live_parameters);
    struct PrefetchCount {
        int64_t gathers = 0;  // parts gathered (acquires that gathered)
        int64_t ahead = 0;    // of those, gathered ahead of their use
        int64_t dropped = 0;  // gathers started ahead and not used (wrong guesses)
    };
    // The counts in a sentence, for the run's log.
    std::string describe_prefetch() const;

    void acquire(int part) override;
    void release(int part) override;
    bool gathers(int part) const override;
    std::vector<at::Tensor> gradient_sources(int part) const override;

    // Trainable partitions: the slices as zero::PartitionedAdamW steps on them (whole tensors
    // named as model.named_weights() names them). Null for frozen partitions.
    Sharding* sharding();

    int64_t slice_bytes() const;  // what this rank holds of the partitioned tensors between uses
    int64_t full_bytes() const;   // the partitioned tensors whole (what every rank would hold)
    int64_t persistent_bytes() const { return persistent_bytes_; }  // kept whole below the threshold
    int64_t largest_part_bytes() const;
    std::string slice_placement() const;  // "device memory", "host memory", or the swap file

private:
    struct Group {  // the tensors of one dtype in a part
        std::vector<at::Tensor*> slots;  // fields of the model's DecoderWeights
        std::vector<std::vector<int64_t>> shapes;
        FlatPartition layout;
        at::ScalarType dtype;
        at::Tensor slice;     // [shard]; undefined when on disk
        bool on_disk = false; // offload_param nvme, beyond max_in_cpu
        size_t swapped = 0;   // then its index in swap_
        std::vector<std::string> names;  // the slots' parameter names (trainable partitions)
    };
    class TrainableSlices;
    // A part's gather: [padded] per group, complete once every pending collective is waited for.
    struct Gather {
        int part = 0;
        std::vector<at::Tensor> fulls, locals;  // locals: the inputs, alive until complete
        std::vector<std::unique_ptr<dist::PendingCollective>> pending;
        TransferStream::Done uploaded;  // offloaded slices uploaded on the side stream
    };
    Gather start_gather(int part, bool wait);
    void fill_part(int part);      // the model's slots point into the part's gather
    void drop_prefetch();          // completes and discards a gather started ahead
    int64_t part_numel(int part) const;
    // The part whose slices hold `part`'s weights: a tied head is the embeddings part.
    int stored_as(int part) const { return tied_ && part == kHead ? kEmbeddings : part; }
    using Slot = model::WeightPart::Slot;
    // Where slices live and, with offload_param nvme, the swap file sized for `frozen` tensors.
    void place_slices(const std::optional<ParameterOffload>& offload, const std::vector<at::Tensor>& frozen,
                      at::ScalarType dtype, size_t parts);
    void add_part(int id, const std::string& name, const std::vector<Slot>& candidates, const at::TensorOptions& options);

    model::DecoderWeights* decoder_ = nullptr;  // the decoder family's weights (its tied head, its read-ahead guess)
    bool tied_ = false;  // lm_head is embed_tokens
    dist::Comm* comm_;
    at::Device device_;  // where parts are gathered and used
    int rank_, world_size_;
    int64_t persistence_threshold_;
    at::TensorOptions slice_options_;  // where the slices live: device_, or host memory
    bool slices_on_host_ = false;      // offload_param (cpu, or nvme between reads)
    std::unique_ptr<TransferStream> transfer_;  // offload_param: uploads ahead of use
    std::unique_ptr<SliceSwap> swap_;  // offload_param nvme, when not everything fits max_in_cpu
    bool nvme_ = false;                // offload_param nvme asked for
    int64_t host_budget_ = 0;          // elements max_in_cpu still allows in host memory
    int64_t kept_in_host_ = 0;         // elements nvme offload keeps in host memory
    std::vector<size_t> disk_indices(const std::vector<Group>& groups) const;  // of the groups on disk
    int last_acquired_ = kEmbeddings;
    // The part likely gathered after `part` (forward: the next; backward's recompute: the one
    // before), for the swap's read-ahead; nullopt when there is no guess.
    std::optional<int> predicted_after(int part) const;
    // For any other model (BART: its embeddings serve the encoder, the decoder and the head, and
    // generation repeats the decoder) predicted_after returns the part that followed the last two
    // acquired the last time they came in that order, as DeepSpeed follows the trace it records
    // of a step; the list order until then.
    std::map<std::pair<int, int>, int> successor_;  // (part before, part) -> the part that came next
    std::optional<int> previous_, before_previous_;  // the last two parts acquired
    int64_t persistent_bytes_ = 0;
    std::map<int, std::vector<Group>> parts_;
    std::vector<int> order_;  // part ids in forward order
    Partitioned which_ = Partitioned::kFrozen;
    std::map<const c10::TensorImpl*, std::string> names_;  // while constructing: parameter names
    std::unique_ptr<TrainableSlices> trainable_;
    bool prefetch_ = false;
    int64_t max_live_parameters_ = 0;
    std::optional<Gather> ahead_;  // the part gathered ahead of its use
    PrefetchCount prefetch_count_;
};

}  // namespace ftl::zero
