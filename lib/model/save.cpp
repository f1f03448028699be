#include "model/save.h"

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "model/tensor_io.h"
#include "util/error.h"
#include "util/files.h"

namespace ftl::model {

std::string config_dtype_name(at::ScalarType type) {
    switch (type) {
        case at::kBFloat16: return "bfloat16";
        case at::kHalf: return "float16";
        case at::kFloat: return "float32";
        default: fail(ErrorKind::kInternal, std::string("no config.json name for dtype ") + c10::toString(type));
    }
}

void write_model_config(const std::string& base_model_dir, const std::string& out_dir,
                        std::optional<int64_t> vocab_size, std::optional<at::ScalarType> dtype,
                        bool floating_point_weights) {
    const std::string path = base_model_dir + "/config.json";
    const auto text = read_text_file(path);
    nlohmann::json config = text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
    if (!config.is_object()) fail(ErrorKind::kConfig, path + ": cannot read it as a JSON object");
    if (vocab_size) config["vocab_size"] = *vocab_size;
    if (dtype) config[config.contains("torch_dtype") ? "torch_dtype" : "dtype"] = config_dtype_name(*dtype);
    if (floating_point_weights) config.erase("quantization_config");
    io::write_file_atomically(out_dir + "/config.json", [&](std::ostream& out) { out << config.dump(2) << "\n"; });
}

void save_model_folder(const std::string& out_dir, const std::vector<std::pair<std::string, at::Tensor>>& weights,
                       const std::string& base_model_dir, int64_t vocab_size, at::ScalarType dtype,
                       size_t max_shard_bytes) {
    std::vector<io::TensorSpec> specs;
    for (const auto& [name, t] : weights) specs.push_back({name, dtype_of(dtype), t.sizes().vec()});
    at::Tensor current;  // one converted tensor alive at a time
    io::write_sharded_safetensors(
        out_dir, specs,
        [&](size_t i) {
            current = weights[i].second.detach().to(at::kCPU, dtype).contiguous();
            return view_of(current);
        },
        max_shard_bytes, "model", {{"format", "pt"}});
    write_model_config(base_model_dir, out_dir, vocab_size, dtype, /*floating_point_weights=*/true);
}

}  // namespace ftl::model
