#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "io/atomic_file.h"
#include "io/manifest.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/tensor_io.h"
#include "util/files.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kPrefix = "checkpoint-";

// Completed checkpoints in output_dir, oldest (lowest step) first.
std::vector<std::pair<int64_t, fs::path>> checkpoints_in(const std::string& output_dir) {
    std::vector<std::pair<int64_t, fs::path>> out;
    if (!fs::is_directory(output_dir)) return out;
    for (const auto& entry : fs::directory_iterator(output_dir)) {
        const std::string name = entry.path().filename().string();
        if (!entry.is_directory() || !starts_with(name, kPrefix)) continue;
        if (auto step = parse_int(name.substr(std::string(kPrefix).size())))
            out.emplace_back(*step, entry.path());
    }
    std::sort(out.begin(), out.end());
    return out;
}

void remove_temporaries(const std::string& output_dir) {
    if (!fs::is_directory(output_dir)) return;
    for (const auto& entry : fs::directory_iterator(output_dir)) {
        const std::string name = entry.path().filename().string();
        if (entry.is_directory() && starts_with(name, ".checkpoint-")) {
            std::error_code ec;
            fs::remove_all(entry.path(), ec);
        }
    }
}

// Everything but the rename: the weights, optimizer state, generators, trainer state, and last
// the manifest that vouches for them.
void write_files(const fs::path& temp_dir, const CheckpointContents& contents,
                 const std::function<void(const std::string&)>& write_model, const std::function<void()>& crash_hook) {
    write_model(temp_dir.string());
    if (crash_hook) crash_hook();
    if (!contents.model_only) {
        const model::CpuTensorViews optimizer = model::cpu_views(contents.optimizer);
        io::write_safetensors((temp_dir / "optimizer.safetensors").string(), optimizer.views);
        std::vector<std::pair<std::string, at::Tensor>> states;
        for (size_t r = 0; r < contents.dropout_rng_states.size(); ++r)
            states.emplace_back("dropout_rank" + std::to_string(r), contents.dropout_rng_states[r]);
        const model::CpuTensorViews rng = model::cpu_views(states);
        io::write_safetensors((temp_dir / "rng_state.safetensors").string(), rng.views);
    }
    io::write_file_atomically((temp_dir / "trainer_state.json").string(),
                              [&](std::ostream& out) { out << contents.trainer_state.dump(2) << "\n"; });
    io::write_manifest(temp_dir.string(), contents.identity);  // last: it vouches for the files above
}

}  // namespace

void check_output_dir(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    const std::string probe = dir + "/.ftlaunch-write-test";
    std::ofstream out(probe);
    if (ec || !out)
        fail(ErrorKind::kConfig, "--output_dir: cannot write to '" + dir + "'" + (ec ? " (" + ec.message() + ")" : ""));
    out.close();
    fs::remove(probe, ec);
}

std::string checkpoint_dir(const std::string& output_dir, int64_t step) {
    return (fs::path(output_dir) / (kPrefix + std::to_string(step))).string();
}

std::string save_checkpoint(const std::string& output_dir, const CheckpointContents& contents,
                            const std::function<void(const std::string&)>& write_model,
                            std::optional<int> save_total_limit, const std::function<void()>& crash_hook,
                            const std::optional<std::string>& keep) {
    const std::string name = kPrefix + std::to_string(contents.global_step);
    const fs::path final_dir = checkpoint_dir(output_dir, contents.global_step);
    const fs::path temp_dir = fs::path(output_dir) / ("." + name + ".tmp-" + std::to_string(::getpid()));
    std::error_code ec;
    fs::remove_all(temp_dir, ec);
    fs::create_directories(temp_dir, ec);
    if (ec) fail(ErrorKind::kIo, temp_dir.string() + ": cannot create: " + ec.message());

    // A failure while writing (a full disk) removes the partial folder, so the space comes back
    // and only complete checkpoints remain; the error goes on to stop the run.
    try {
        write_files(temp_dir, contents, write_model, crash_hook);
    } catch (...) {
        fs::remove_all(temp_dir, ec);
        throw;
    }
    // Every file above was fsynced by its writer; the rename publishes them together.
    if (fs::exists(final_dir)) fs::remove_all(final_dir, ec);  // a re-run of the same step replaces it
    fs::rename(temp_dir, final_dir, ec);
    if (ec) fail(ErrorKind::kIo, final_dir.string() + ": cannot move the checkpoint into place: " + ec.message());
    io::sync_directory(output_dir);

    // transformers' rotate_checkpoints: the oldest go first, never the newest nor `keep`.
    if (save_total_limit && *save_total_limit > 0) {
        auto all = checkpoints_in(output_dir);
        auto is_kept = [&](const fs::path& dir) { return dir == all.back().second || (keep && dir == fs::path(*keep)); };
        const size_t kept = 1 + (keep && fs::path(*keep) != all.back().second && fs::is_directory(*keep) ? 1 : 0);
        size_t remaining = all.size();
        for (const auto& [step, dir] : all) {
            if (remaining <= std::max(static_cast<size_t>(*save_total_limit), kept)) break;
            if (is_kept(dir)) continue;
            fs::remove_all(dir, ec);
            --remaining;
        }
    }
    return final_dir.string();
}

void keep_only_checkpoint(const std::string& output_dir, const std::string& kept) {
    std::error_code ec;
    for (const auto& [step, dir] : checkpoints_in(output_dir))
        if (!fs::equivalent(dir, kept, ec)) fs::remove_all(dir, ec);
}

std::string find_checkpoint(const std::string& resume_from, const std::string& output_dir) {
    remove_temporaries(output_dir);
    const auto as_bool = parse_bool(resume_from);
    if (resume_from == "auto") {
        auto all = checkpoints_in(output_dir);
        return all.empty() ? std::string() : all.back().second.string();
    }
    if ((as_bool && *as_bool) || resume_from == "last") {
        auto all = checkpoints_in(output_dir);
        if (all.empty())
            fail(ErrorKind::kConfig, "--resume_from_checkpoint " + resume_from + ": no checkpoint-<step> folder in '" +
                                         output_dir + "'");
        return all.back().second.string();
    }
    if (!fs::is_directory(resume_from) || !fs::exists(fs::path(resume_from) / "trainer_state.json"))
        fail(ErrorKind::kConfig, "--resume_from_checkpoint: '" + resume_from +
                                     "' is not a checkpoint folder (expected trainer_state.json in it)");
    return resume_from;
}

CheckpointContents load_checkpoint(const std::string& dir) {
    CheckpointContents c;
    c.identity = io::verify_manifest(dir).identity;
    c.trainer_state = nlohmann::json::parse(read_text_file(dir + "/trainer_state.json").value_or(""), nullptr, false);
    if (c.trainer_state.is_discarded() || !c.trainer_state.contains("global_step"))
        fail(ErrorKind::kConfig, dir + "/trainer_state.json: not a trainer state (no global_step)");
    c.global_step = c.trainer_state["global_step"].get<int64_t>();
    if (!fs::exists(dir + "/optimizer.safetensors"))
        fail(ErrorKind::kConfig, dir + " holds no optimizer.safetensors (saved with --save_only_model): it has the weights "
                                       "only, so training cannot resume from it; load it as a model or adapter, or resume "
                                       "from a checkpoint saved without --save_only_model");
    auto optimizer = io::SafetensorsFile::open(dir + "/optimizer.safetensors");
    for (const auto& e : optimizer->header().tensors)
        c.optimizer.emplace_back(e.name, model::tensor_from_view(optimizer->tensor(e.name)));
    auto rng = io::SafetensorsFile::open(dir + "/rng_state.safetensors");
    for (size_t r = 0; rng->contains("dropout_rank" + std::to_string(r)); ++r)
        c.dropout_rng_states.push_back(model::tensor_from_view(rng->tensor("dropout_rank" + std::to_string(r))));
    return c;
}

}  // namespace ftl::train
