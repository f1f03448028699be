#include "train/trainer_resume.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <map>

#include "io/atomic_file.h"
#include "util/error.h"

namespace ftl::train {
namespace {

using c10::IValue;
using Dict = c10::impl::GenericDict;
using List = c10::impl::GenericList;

Dict string_dict() { return Dict(c10::StringType::get(), c10::AnyType::get()); }

List any_list() { return List(c10::AnyType::get()); }

// torch.save's zip layout (data.pkl with persistent tensor ids, data/<n> tensor records): the
// pickler without TorchScript's type tags, which torch.load(weights_only=True) refuses.
std::vector<char> torch_save_bytes(const IValue& value) {
    std::vector<char> pickle;
    torch::jit::Pickler pickler([&](const char* bytes, size_t n) { pickle.insert(pickle.end(), bytes, bytes + n); },
                                /*tensor_table=*/nullptr, /*type_renamer=*/nullptr, /*memoized_class_types=*/nullptr,
                                /*get_tensor_id=*/nullptr, /*tag_aggregates=*/false);
    pickler.protocol();
    pickler.pushIValue(value);
    pickler.stop();
    std::vector<char> out;
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, size_t n) {
        const char* p = static_cast<const char*>(bytes);
        out.insert(out.end(), p, p + n);
        return n;
    });
    torch::jit::writeArchiveAndTensors("data", pickle.data(), pickle.size(), pickler.tensorData(), writer);
    writer.writeEndOfFile();
    return out;
}

void write_torch_file(const std::string& path, const IValue& value) {
    const std::vector<char> bytes = torch_save_bytes(value);
    io::write_file_atomically(path, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
}

// One of the Trainer's two AdamW parameter groups, its keys as torch 2.x's AdamW writes them.
Dict parameter_group(const TrainerResumeFacts& facts, double weight_decay, const List& params) {
    Dict group = string_dict();
    group.insert("weight_decay", weight_decay);
    group.insert("lr", facts.current_lr);
    group.insert("betas", c10::ivalue::Tuple::create({facts.options.beta1, facts.options.beta2}));
    group.insert("eps", facts.options.eps);
    group.insert("amsgrad", false);
    group.insert("maximize", false);
    group.insert("foreach", IValue());
    group.insert("capturable", false);
    group.insert("differentiable", false);
    group.insert("fused", facts.options.fused ? IValue(true) : IValue());
    group.insert("decoupled_weight_decay", true);
    group.insert("initial_lr", facts.initial_lr);
    group.insert("params", params);
    return group;
}

}  // namespace

bool trainer_can_resume(const config::RunConfig& run) {
    const config::TrainArgs& a = run.train;
    return a.use_peft_lora && !run.uses_deepspeed && (a.optim == "adamw_torch" || a.optim == "adamw_torch_fused") &&
           !a.fp16 && a.lr_scheduler_type != "reduce_lr_on_plateau";
}

void write_trainer_resume_files(const std::string& dir, const std::vector<std::pair<std::string, at::Tensor>>& parameters,
                                const std::vector<std::pair<std::string, at::Tensor>>& state,
                                const TrainerResumeFacts& facts) {
    const std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
    auto entry = [&](const std::string& name) {
        const auto it = by_name.find(name);
        if (it == by_name.end()) fail(ErrorKind::kInternal, "trainer resume files: no optimizer state '" + name + "'");
        return it->second.to(at::kCPU, at::kFloat).contiguous();
    };
    // The Trainer numbers its decay group first, then the rest (torch numbers parameters across
    // groups in order).
    std::vector<const std::pair<std::string, at::Tensor>*> decayed, plain;
    for (const auto& p : parameters) (optim::exempt_from_weight_decay(p.first) ? plain : decayed).push_back(&p);
    std::vector<const std::pair<std::string, at::Tensor>*> ordered = decayed;
    ordered.insert(ordered.end(), plain.begin(), plain.end());
    Dict states(c10::IntType::get(), c10::AnyType::get());
    List decay_ids = any_list(), plain_ids = any_list();
    const at::Tensor step = at::scalar_tensor(static_cast<double>(facts.steps), at::kFloat);
    for (size_t i = 0; i < ordered.size(); ++i) {
        const std::string& name = ordered[i]->first;
        Dict one = string_dict();
        one.insert("step", step.clone());
        one.insert("exp_avg", entry("exp_avg." + name));
        one.insert("exp_avg_sq", entry("exp_avg_sq." + name));
        states.insert(static_cast<int64_t>(i), one);
        (i < decayed.size() ? decay_ids : plain_ids).push_back(static_cast<int64_t>(i));
    }
    List groups = any_list();
    groups.push_back(parameter_group(facts, facts.options.weight_decay, decay_ids));
    groups.push_back(parameter_group(facts, 0.0, plain_ids));
    Dict optimizer = string_dict();
    optimizer.insert("state", states);
    optimizer.insert("param_groups", groups);
    write_torch_file(dir + "/optimizer.pt", optimizer);

    // LambdaLR after `steps` scheduler steps: last_epoch counts them, _step_count one more (the
    // constructor's); lr_lambdas holds each functools.partial's (empty) __dict__.
    auto two = [](const IValue& v) {
        List l = any_list();
        l.push_back(v);
        l.push_back(v);
        return l;
    };
    Dict scheduler = string_dict();
    scheduler.insert("base_lrs", two(facts.initial_lr));
    scheduler.insert("last_epoch", facts.steps);
    scheduler.insert("_step_count", facts.steps + 1);
    scheduler.insert("_is_initial", false);
    scheduler.insert("_get_lr_called_within_step", false);
    scheduler.insert("_last_lr", two(facts.current_lr));
    scheduler.insert("lr_lambdas", two(string_dict()));
    write_torch_file(dir + "/scheduler.pt", scheduler);
}

}  // namespace ftl::train
