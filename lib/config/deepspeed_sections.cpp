#include "config/deepspeed_sections.h"

#include <algorithm>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::config {

namespace {

using nlohmann::json;

// The section's "params" object (absent: none), after checking the section holds only type and params.
const json& params_of(const JsonReader& r, const json& section, const std::string& name) {
    static const json none = json::object();
    for (const auto& [key, value] : r.object(section, name).items())
        if (key != "type" && key != "params")
            r.fail(name + "." + key, "not a key of the " + name + " section (it takes type and params)");
    if (!section.contains("params")) return none;
    return r.object(section["params"], name + ".params");
}

std::string type_of(const JsonReader& r, const json& section, const std::string& name) {
    if (!section.contains("type")) r.fail(name + ".type", "missing: the " + name + " DeepSpeed builds needs a type");
    return r.string(section["type"], name + ".type");
}

}  // namespace

void fail_on_mismatches(const std::string& source, const std::vector<std::string>& mismatches) {
    if (mismatches.empty()) return;
    ftl::fail(ErrorKind::kConfig, source + ": Please correct the following DeepSpeed config values that mismatch "
                                           "TrainingArguments values:\n" + join(mismatches, "\n") +
                                      "\nThe easiest method is to set these DeepSpeed config values to 'auto'.");
}

DeepSpeedOptimizerConfig read_optimizer_section(const JsonReader& r, const json& section) {
    DeepSpeedOptimizerConfig o;
    const json& params = params_of(r, section, "optimizer");
    o.type = type_of(r, section, "optimizer");
    const std::string kind = to_lower(o.type);
    if (kind != "adam" && kind != "adamw")
        r.fail("optimizer.type", "'" + o.type + "' is not an optimizer ftlaunch builds (use AdamW or Adam; or leave the "
                                 "optimizer section out to use the flags' --optim)");
    for (const auto& [k, v] : params.items()) {
        const std::string key = "optimizer.params." + k;
        o.given.insert(k);
        if (k == "lr") o.lr = r.auto_number(v, key, 0.0);
        else if (k == "eps") o.eps = r.auto_number(v, key, 0.0);
        else if (k == "weight_decay") o.weight_decay = r.auto_number(v, key, 0.0);
        else if (k == "betas") {
            if (JsonReader::is_auto(v)) {
                o.beta1 = o.beta2 = std::nullopt;
                continue;
            }
            if (!v.is_array() || v.size() != 2) r.fail(key, "must be [beta1, beta2] or \"auto\" (got " + v.dump() + ")");
            o.beta1 = r.number(v[0], key + "[0]", 0.0);
            o.beta2 = r.number(v[1], key + "[1]", 0.0);
            if (*o.beta1 >= 1 || *o.beta2 >= 1) r.fail(key, "each beta must be in [0, 1) (got " + v.dump() + ")");
        } else if (k == "adam_w_mode") {
            if (!r.boolean(v, key) && kind == "adam")
                r.fail(key, "false (Adam with L2 regularisation) is not supported: ftlaunch's Adam decouples the "
                            "weight decay (AdamW, DeepSpeed's default)");
        } else if (k == "bias_correction") {
            if (!r.boolean(v, key)) r.fail(key, "false is not supported: ftlaunch's AdamW corrects the moments' bias");
        } else if (k == "amsgrad") {
            if (r.boolean(v, key)) r.fail(key, "true is not supported by ftlaunch's AdamW");
        } else if (k == "fp32_optimizer_states") {
            if (!r.boolean(v, key)) r.fail(key, "false is not supported: ftlaunch keeps the moments in fp32");
        } else if (k == "torch_adam") {
            r.boolean(v, key);  // torch's AdamW and DeepSpeed's fused Adam compute the same update
        } else if (k == "max_grad_norm") {
            r.fail(key, "not an optimizer parameter: use DeepSpeed's gradient_clipping (or --max_grad_norm)");
        } else {
            r.fail(key, "not a parameter of DeepSpeed's " + o.type +
                            " (lr, betas, eps, weight_decay, adam_w_mode, bias_correction, amsgrad, torch_adam)");
        }
    }
    return o;
}

DeepSpeedSchedulerConfig read_scheduler_section(const JsonReader& r, const json& section) {
    DeepSpeedSchedulerConfig s;
    const json& params = params_of(r, section, "scheduler");
    s.type = type_of(r, section, "scheduler");
    const bool cosine = s.type == "WarmupCosineLR";
    std::vector<std::string> takes = {"warmup_num_steps", "warmup_type", "last_batch_iteration"};
    if (s.type == "WarmupLR" || s.type == "WarmupDecayLR") {
        takes.insert(takes.end(), {"warmup_min_lr", "warmup_max_lr"});
    } else if (cosine) {
        takes.insert(takes.end(), {"warmup_min_ratio", "cos_min_ratio"});
    } else {
        r.fail("scheduler.type", "'" + s.type + "' is not a schedule ftlaunch builds (use WarmupLR, WarmupDecayLR or "
                                 "WarmupCosineLR; or leave the scheduler section out to use --lr_scheduler_type)");
    }
    if (s.type != "WarmupLR") takes.push_back("total_num_steps");
    for (const auto& [k, v] : params.items()) {
        const std::string key = "scheduler.params." + k;
        if (std::find(takes.begin(), takes.end(), k) == takes.end())
            r.fail(key, "not a parameter of DeepSpeed's " + s.type + " (it takes " + join(takes, ", ") + ")");
        s.given.insert(k);
        if (k == "warmup_min_lr") s.warmup_min_lr = r.auto_number(v, key, 0.0);
        else if (k == "warmup_max_lr") s.warmup_max_lr = r.auto_number(v, key, 0.0);
        else if (k == "warmup_min_ratio") s.warmup_min_ratio = r.number(v, key, 0.0);
        else if (k == "cos_min_ratio") s.cos_min_ratio = r.number(v, key, 0.0);
        else if (k == "warmup_num_steps") s.warmup_num_steps = r.auto_integer(v, key, 1);
        else if (k == "total_num_steps") s.total_num_steps = r.auto_integer(v, key, 0);
        else if (k == "warmup_type") {
            const std::string shape = r.string(v, key);
            if (shape != "log" && shape != "linear") r.fail(key, "must be log or linear (got " + v.dump() + ")");
            s.log_warmup = shape == "log";
        } else if (k == "last_batch_iteration") {
            if (r.integer(v, key, -1) != -1)
                r.fail(key, "must be -1: a run continues its schedule by resuming from a checkpoint (--resume_from_checkpoint)");
        }
    }
    if (s.type != "WarmupLR" && !s.given.count("total_num_steps"))
        r.fail("scheduler.params.total_num_steps", "missing: " + s.type + " needs it (\"auto\": the run's optimizer steps)");
    return s;
}

void fill_optimizer_from_flags(DeepSpeedOptimizerConfig& o, const TrainArgs& a, std::vector<std::string>& mismatches) {
    fill_match(o.lr, o.given.count("lr"), "optimizer.params.lr", a.learning_rate, "learning_rate", mismatches);
    if (o.given.count("betas")) {
        const bool was_auto = !o.beta1;
        if (was_auto) o.beta1 = a.adam_beta1, o.beta2 = a.adam_beta2;
        else if (*o.beta1 != a.adam_beta1 || *o.beta2 != a.adam_beta2)
            mismatches.push_back("- ds optimizer.params.betas=" + json::array({*o.beta1, *o.beta2}).dump() +
                                 " vs hf adam_beta1+adam_beta2=" + json::array({a.adam_beta1, a.adam_beta2}).dump());
    }
    fill_match(o.eps, o.given.count("eps"), "optimizer.params.eps", a.adam_epsilon, "adam_epsilon", mismatches);
    fill_match(o.weight_decay, o.given.count("weight_decay"), "optimizer.params.weight_decay", a.weight_decay,
               "weight_decay", mismatches);
}

void fill_scheduler_from_flags(DeepSpeedSchedulerConfig& s, const TrainArgs& a, std::vector<std::string>& mismatches) {
    if (!s.warmup_min_lr) s.warmup_min_lr = 0.0;  // fill_only: not a Trainer flag
    fill_match(s.warmup_max_lr, s.given.count("warmup_max_lr"), "scheduler.params.warmup_max_lr", a.learning_rate,
               "learning_rate", mismatches);
}

void resolve_with_steps(DeepSpeedConfig& ds, long long total_steps, long long warmup_steps, double optimizer_lr) {
    if (!ds.scheduler) return;
    DeepSpeedSchedulerConfig& s = *ds.scheduler;
    std::vector<std::string> mismatches;
    if (s.type != "WarmupLR")
        fill_match(s.total_num_steps, s.given.count("total_num_steps"), "scheduler.params.total_num_steps", total_steps,
                   "num_training_steps (calculated)", mismatches);
    // DeepSpeed 0.19.6+ refuses a warmup of 0 steps; HF fills at least 1.
    fill_match(s.warmup_num_steps, s.given.count("warmup_num_steps"), "scheduler.params.warmup_num_steps",
               std::max(1LL, warmup_steps), "warmup_steps", mismatches);
    if (s.type == "WarmupLR" && !s.given.count("warmup_max_lr")) s.warmup_max_lr = optimizer_lr;
    fail_on_mismatches(ds.source, mismatches);
}

json to_json(const DeepSpeedOptimizerConfig& o) {
    auto value = [](const Auto<double>& v) { return v ? json(*v) : json("auto"); };
    json params = json::object();
    for (const std::string& k : o.given) {
        if (k == "lr") params[k] = value(o.lr);
        else if (k == "eps") params[k] = value(o.eps);
        else if (k == "weight_decay") params[k] = value(o.weight_decay);
        else if (k == "betas") params[k] = o.beta1 ? json::array({*o.beta1, *o.beta2}) : json("auto");
    }
    return {{"type", o.type}, {"params", params}};
}

json to_json(const DeepSpeedSchedulerConfig& s) {
    auto value = [](const auto& v) { return v ? json(*v) : json("auto"); };
    json params = json::object();
    for (const std::string& k : s.given) {
        if (k == "warmup_min_lr") params[k] = value(s.warmup_min_lr);
        else if (k == "warmup_max_lr") params[k] = value(s.warmup_max_lr);
        else if (k == "warmup_min_ratio") params[k] = s.warmup_min_ratio;
        else if (k == "cos_min_ratio") params[k] = s.cos_min_ratio;
        else if (k == "warmup_num_steps") params[k] = value(s.warmup_num_steps);
        else if (k == "total_num_steps") params[k] = value(s.total_num_steps);
        else if (k == "warmup_type") params[k] = s.log_warmup ? "log" : "linear";
    }
    return {{"type", s.type}, {"params", params}};
}

}  // namespace ftl::config
