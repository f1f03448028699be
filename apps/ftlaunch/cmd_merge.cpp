// `ftlaunch merge`: a LoRA adapter folded into its base model (peft/merge.h), from any run —
// ZeRO-3 included, since the adapter is whole on rank 0.
#include "commands.h"
#include "io/hub.h"
#include "model/tensor_io.h"
#include "peft/merge.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::app {

int run_merge(const MergeInvocation& merge, const Log& log) {
    peft::MergeOptions options;
    options.model_dir = io::resolve_repo_dir(merge.model_name_or_path, io::HubCache::from_environment());
    options.adapter_dir = merge.adapter_path;
    options.output_dir = merge.output_dir;
    if (!merge.torch_dtype.empty() && merge.torch_dtype != "auto")
        options.dtype = model::parse_float_dtype(merge.torch_dtype, "--torch_dtype");
    const auto shard_bytes = parse_byte_size(merge.max_shard_size);
    if (!shard_bytes)
        fail(ErrorKind::kUsage, "--max_shard_size: expected a size like 5GB, 500MB or 2GiB (got '" + merge.max_shard_size + "')");
    options.max_shard_bytes = static_cast<size_t>(*shard_bytes);
    const peft::MergeSummary summary = peft::merge_adapter(options);
    log.info("merged " + std::to_string(summary.merged_linears) + " LoRA weights" +
             (summary.replaced_tensors ? " and took " + std::to_string(summary.replaced_tensors) + " tensors from the adapter"
                                       : std::string()) +
             " into " + options.output_dir + " (" + join(summary.files, ", ") + ")");
    return 0;
}

}  // namespace ftl::app
