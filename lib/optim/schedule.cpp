#include "optim/schedule.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "util/error.h"
#include "util/strings.h"

namespace ftl::optim {

namespace {

using nlohmann::json;

// --lr_scheduler_kwargs, read key by key: each value is a JSON value or text that
// TrainingArguments' _convert_str_dict turns into a bool or a number; keys the schedule does not
// take are an error once all are read, as get_scheduler's **kwargs would be a TypeError.
class Kwargs {
public:
    Kwargs(const json& kwargs, std::string type) : kwargs_(kwargs), type_(std::move(type)) {
        if (!kwargs_.is_null() && !kwargs_.is_object())
            fail(ErrorKind::kConfig, "--lr_scheduler_kwargs: must be a JSON object (got " + kwargs_.dump() + ")");
    }

    std::optional<double> number(const std::string& key) {
        const json* v = find(key);
        if (!v) return std::nullopt;
        if (v->is_number()) return v->get<double>();
        if (v->is_string())
            if (auto parsed = parse_double(v->get<std::string>()); parsed && std::isfinite(*parsed)) return parsed;
        bad(key, *v, "must be a number");
    }

    std::optional<std::string> word(const std::string& key, const std::vector<std::string>& choices) {
        const json* v = find(key);
        if (!v) return std::nullopt;
        if (!v->is_string() || std::find(choices.begin(), choices.end(), v->get<std::string>()) == choices.end())
            bad(key, *v, "must be one of " + join(choices, ", "));
        return v->get<std::string>();
    }

    // After reading every key the schedule takes.
    void refuse_others() const {
        if (kwargs_.is_null()) return;
        for (const auto& [key, value] : kwargs_.items())
            if (!read_.count(key))
                fail(ErrorKind::kConfig, "--lr_scheduler_kwargs: '" + key + "' is not a parameter of --lr_scheduler_type " +
                                             type_ + (read_.empty() ? " (it takes none)" : " (it takes " + join({read_.begin(), read_.end()}, ", ") + ")"));
    }

    [[noreturn]] void bad(const std::string& key, const json& value, const std::string& rule) const {
        fail(ErrorKind::kConfig, "--lr_scheduler_kwargs: " + key + " for " + type_ + " " + rule + " (got " + value.dump() + ")");
    }

private:
    const json* find(const std::string& key) {
        read_.insert(key);
        if (kwargs_.is_null() || !kwargs_.contains(key) || kwargs_[key].is_null()) return nullptr;
        return &kwargs_[key];
    }

    const json& kwargs_;
    std::string type_;
    std::set<std::string> read_;
};

// s / max(1, warmup): the linear warmup every Trainer schedule but wsd and cosine_warmup_with_min_lr shares.
double linear_warmup(int64_t step, int64_t warmup) {
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
}

// Fraction of the decay done: (s - warmup) / max(1, total - warmup).
double decay_progress(int64_t step, int64_t warmup, int64_t total) {
    return static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
}

// Python's float modulo (the sign of the divisor), as cosine_with_restarts' `% 1.0` computes it.
double python_mod_one(double x) {
    const double r = std::fmod(x, 1.0);
    return r < 0 ? r + 1.0 : r;
}

// transformers' _get_wsd_scheduler_lambda's shapes: f(progress in [0, 1]) rising (warmup) or falling (decay).
double wsd_shape(const std::string& shape, double progress, bool rising, double num_cycles) {
    if (shape == "linear") return rising ? progress : 1.0 - progress;
    if (shape == "cosine")
        return rising ? 0.5 * (1.0 - std::cos(M_PI * progress)) : 0.5 * (1.0 + std::cos(M_PI * num_cycles * 2.0 * progress));
    return rising ? 1.0 - std::sqrt(1.0 - progress) : 1.0 - std::sqrt(progress);  // "1-sqrt"
}

// min_lr_rate for the cosine_*_min_lr schedules: exactly one of min_lr and min_lr_rate.
double min_lr_rate_from(Kwargs& kw, double learning_rate) {
    const auto min_lr = kw.number("min_lr");
    const auto min_lr_rate = kw.number("min_lr_rate");
    if (min_lr && min_lr_rate) kw.bad("min_lr", *min_lr, "cannot be given with min_lr_rate: give one");
    if (!min_lr && !min_lr_rate)
        fail(ErrorKind::kConfig, "--lr_scheduler_kwargs: the cosine schedules with a minimum need min_lr_rate (a ratio of "
                                 "--learning_rate) or min_lr, e.g. '{\"min_lr_rate\": 0.1}'");
    return min_lr ? *min_lr / learning_rate : *min_lr_rate;
}

LearningRateSchedule scaled(double learning_rate, std::function<double(int64_t)> multiplier) {
    return [learning_rate, multiplier = std::move(multiplier)](int64_t step) { return learning_rate * multiplier(step); };
}

}  // namespace

int64_t warmup_steps_for(int64_t total_steps, double warmup_steps, double warmup_ratio) {
    if (warmup_steps >= 1) return static_cast<int64_t>(warmup_steps);
    if (warmup_steps > 0) return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_steps));
    return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

LearningRateSchedule trainer_schedule(const std::string& type, const json& kwargs, double learning_rate, int64_t warmup,
                                      int64_t total) {
    Kwargs kw(kwargs, type);
    LearningRateSchedule schedule;
    if (type == "constant") {
        schedule = [learning_rate](int64_t) { return learning_rate; };
    } else if (type == "constant_with_warmup") {
        schedule = scaled(learning_rate, [=](int64_t s) { return s < warmup ? linear_warmup(s, warmup) : 1.0; });
    } else if (type == "linear") {
        schedule = scaled(learning_rate, [=](int64_t s) {
            if (s < warmup) return linear_warmup(s, warmup);
            return std::max(0.0, static_cast<double>(total - s) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
        });
    } else if (type == "cosine" || type == "cosine_with_min_lr") {
        const double cycles = kw.number("num_cycles").value_or(0.5);
        // cosine's floor 0 leaves the factor exactly as it is (x * 1 + 0 == x).
        const double floor = type == "cosine" ? 0.0 : min_lr_rate_from(kw, learning_rate);
        schedule = scaled(learning_rate, [=](int64_t s) {
            if (s < warmup) return linear_warmup(s, warmup);
            const double factor = 0.5 * (1.0 + std::cos(M_PI * cycles * 2.0 * decay_progress(s, warmup, total)));
            return std::max(0.0, factor * (1 - floor) + floor);
        });
    } else if (type == "cosine_warmup_with_min_lr") {
        const double cycles = kw.number("num_cycles").value_or(0.5);
        const double floor = min_lr_rate_from(kw, learning_rate);
        const std::optional<double> warmup_lr_rate = kw.number("warmup_lr_rate");
        const double w = static_cast<double>(warmup), n = static_cast<double>(total);
        schedule = scaled(learning_rate, [=](int64_t step) {
            const double s = static_cast<double>(step);
            if (s < w) {
                if (!warmup_lr_rate) return (s + 1.0) / std::max(1.0, w);
                return *warmup_lr_rate + (1.0 - *warmup_lr_rate) * s / std::max(1.0, w - 1);
            }
            const double progress = (s - w + 1.0) / std::max(1.0, n - w);
            const double factor = 0.5 * (1.0 + std::cos(M_PI * cycles * 2.0 * progress));
            return std::max(0.0, factor * (1 - floor) + floor);
        });
    } else if (type == "cosine_with_restarts") {
        const double cycles = kw.number("num_cycles").value_or(1.0);
        schedule = scaled(learning_rate, [=](int64_t s) {
            if (s < warmup) return linear_warmup(s, warmup);
            const double progress = decay_progress(s, warmup, total);
            if (progress >= 1.0) return 0.0;
            return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * python_mod_one(cycles * progress))));
        });
    } else if (type == "polynomial") {
        const double lr_end = kw.number("lr_end").value_or(1e-7);
        const double power = kw.number("power").value_or(1.0);
        if (!(learning_rate > lr_end))
            kw.bad("lr_end", lr_end, "must be smaller than --learning_rate " + json(learning_rate).dump());
        schedule = scaled(learning_rate, [=](int64_t s) {
            if (s < warmup) return linear_warmup(s, warmup);
            if (s > total || total == warmup) return lr_end / learning_rate;  // (total == warmup: the limit of the decay)
            const double remaining = 1 - static_cast<double>(s - warmup) / static_cast<double>(total - warmup);
            return ((learning_rate - lr_end) * std::pow(remaining, power) + lr_end) / learning_rate;
        });
    } else if (type == "inverse_sqrt") {
        const double timescale = kw.number("timescale").value_or(warmup > 0 ? static_cast<double>(warmup) : 10'000.0);
        if (!(timescale > 0)) kw.bad("timescale", timescale, "must be positive");
        schedule = scaled(learning_rate, [=](int64_t s) {
            if (s < warmup) return linear_warmup(s, warmup);
            return 1.0 / std::sqrt((static_cast<double>(s) + (timescale - static_cast<double>(warmup))) / timescale);
        });
    } else if (type == "warmup_stable_decay") {
        const std::vector<std::string> shapes = {"linear", "cosine", "1-sqrt"};
        const auto decay_steps = kw.number("num_decay_steps");
        if (!decay_steps)
            fail(ErrorKind::kConfig, "--lr_scheduler_kwargs: warmup_stable_decay needs num_decay_steps, e.g. '{\"num_decay_steps\": 100}'");
        if (*decay_steps < 0) kw.bad("num_decay_steps", *decay_steps, "must be at least 0");
        const auto decay = static_cast<int64_t>(*decay_steps);
        const auto stable = static_cast<int64_t>(kw.number("num_stable_steps").value_or(static_cast<double>(total - warmup - decay)));
        const std::string warmup_shape = kw.word("warmup_type", shapes).value_or("linear");
        const std::string decay_shape = kw.word("decay_type", shapes).value_or("cosine");
        const double floor = kw.number("min_lr_ratio").value_or(0.0);
        const double cycles = kw.number("num_cycles").value_or(0.5);
        schedule = scaled(learning_rate, [=](int64_t s) {
            if (s < warmup)
                return std::max(0.0, wsd_shape(warmup_shape, linear_warmup(s, warmup), true, cycles) * (1.0 - floor) + floor);
            if (s < warmup + stable) return 1.0;
            if (s < warmup + stable + decay) {
                const double progress = static_cast<double>(s - warmup - stable) / static_cast<double>(std::max<int64_t>(1, decay));
                return std::max(0.0, wsd_shape(decay_shape, progress, false, cycles) * (1.0 - floor) + floor);
            }
            return floor;
        });
    } else {
        fail(ErrorKind::kConfig, "--lr_scheduler_type: '" + type +
                                     "' is not supported (use linear, cosine, cosine_with_restarts, polynomial, constant, "
                                     "constant_with_warmup, inverse_sqrt, cosine_with_min_lr, cosine_warmup_with_min_lr or "
                                     "warmup_stable_decay)");
    }
    kw.refuse_others();
    return schedule;
}

LearningRateSchedule deepspeed_schedule(const DeepSpeedSchedule& d, double learning_rate) {
    using Type = DeepSpeedSchedule::Type;
    const int64_t warmup = std::max<int64_t>(2, d.warmup_num_steps);
    const double inverse_log_warmup = 1.0 / std::log(static_cast<double>(warmup));
    // The warmup's rise in [0, 1) at iteration i < warmup.
    auto rise = [=](int64_t i) {
        return d.log_warmup ? inverse_log_warmup * std::log(static_cast<double>(i + 1))
                            : static_cast<double>(i) / static_cast<double>(warmup);
    };
    if (d.type == Type::kWarmupCosineLR)
        return [=](int64_t steps_done) {
            const int64_t i = steps_done - 1;
            if (i < 0) return 0.0;
            if (i < warmup) return learning_rate * (d.warmup_min_ratio + rise(i) * (1. - d.warmup_min_ratio));
            const double progress = std::min(1.0, static_cast<double>(i - warmup + 1) /
                                                      static_cast<double>(std::max<int64_t>(1, d.total_num_steps - warmup)));
            const double cosine = (1 + std::cos(M_PI * progress)) / 2;
            return learning_rate * std::max(0.0, d.cos_min_ratio + (1. - d.cos_min_ratio) * cosine);
        };
    return [=](int64_t steps_done) {
        const int64_t i = steps_done - 1;
        if (i < 0) return d.warmup_min_lr;
        double gamma = 1.0;
        if (i < warmup) gamma = rise(i);
        else if (d.type == Type::kWarmupDecayLR)
            gamma = std::max(0.0, static_cast<double>(d.total_num_steps - i) /
                                      std::max(1.0, static_cast<double>(d.total_num_steps - warmup)));
        return d.warmup_min_lr + (d.warmup_max_lr - d.warmup_min_lr) * gamma;
    };
}

PlateauSchedule::PlateauSchedule(const json& kwargs, double learning_rate) : lr_(learning_rate) {
    const std::string type = "reduce_lr_on_plateau";
    Kwargs kw(kwargs, type);
    maximize_ = kw.word("mode", {"min", "max"}).value_or("min") == "max";
    factor_ = kw.number("factor").value_or(0.1);
    if (!(factor_ < 1.0)) kw.bad("factor", kwargs["factor"], "must be below 1 (torch's ReduceLROnPlateau: Factor should be < 1.0)");
    const double patience = kw.number("patience").value_or(10.0);
    if (patience < 0 || patience != std::floor(patience)) kw.bad("patience", kwargs["patience"], "must be a whole number >= 0");
    patience_ = static_cast<int64_t>(patience);
    threshold_ = kw.number("threshold").value_or(1e-4);
    absolute_threshold_ = kw.word("threshold_mode", {"rel", "abs"}).value_or("rel") == "abs";
    const double cooldown = kw.number("cooldown").value_or(0.0);
    if (cooldown < 0 || cooldown != std::floor(cooldown)) kw.bad("cooldown", kwargs["cooldown"], "must be a whole number >= 0");
    cooldown_ = static_cast<int64_t>(cooldown);
    min_lr_ = kw.number("min_lr").value_or(0.0);
    eps_ = kw.number("eps").value_or(1e-8);
    kw.refuse_others();
    best_ = maximize_ ? -INFINITY : INFINITY;
}

bool PlateauSchedule::better(double value) const {
    if (maximize_) return absolute_threshold_ ? value > best_ + threshold_ : value > best_ * (threshold_ + 1.0);
    return absolute_threshold_ ? value < best_ - threshold_ : value < best_ * (1.0 - threshold_);
}

void PlateauSchedule::observe(double metric) {
    ++evaluations_;
    if (better(metric)) {
        best_ = metric;
        bad_evaluations_ = 0;
    } else {
        ++bad_evaluations_;
    }
    if (cooldown_left_ > 0) {
        --cooldown_left_;
        bad_evaluations_ = 0;
    }
    if (bad_evaluations_ > patience_) {
        const double reduced = std::max(lr_ * factor_, min_lr_);
        if (lr_ - reduced > eps_) lr_ = reduced;
        cooldown_left_ = cooldown_;
        bad_evaluations_ = 0;
    }
}

std::vector<std::pair<std::string, at::Tensor>> PlateauSchedule::state() const {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& [name, value] : {std::pair{"plateau.lr", lr_}, std::pair{"plateau.best", best_},
                                      std::pair{"plateau.num_bad_epochs", static_cast<double>(bad_evaluations_)},
                                      std::pair{"plateau.cooldown_counter", static_cast<double>(cooldown_left_)},
                                      std::pair{"plateau.last_epoch", static_cast<double>(evaluations_)}})
        out.emplace_back(name, at::scalar_tensor(value, at::kDouble));
    return out;
}

void PlateauSchedule::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) {
    const std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
    auto take = [&](const std::string& name) {
        auto it = by_name.find(name);
        if (it == by_name.end())
            fail(ErrorKind::kConfig, "optimizer state: missing '" + name + "' (was the checkpoint written with another "
                                     "--lr_scheduler_type?)");
        return it->second.item<double>();
    };
    lr_ = take("plateau.lr");
    best_ = take("plateau.best");
    bad_evaluations_ = static_cast<int64_t>(take("plateau.num_bad_epochs"));
    cooldown_left_ = static_cast<int64_t>(take("plateau.cooldown_counter"));
    evaluations_ = static_cast<int64_t>(take("plateau.last_epoch"));
}

}  // namespace ftl::optim
