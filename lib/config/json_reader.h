// Typed reads from a DeepSpeed JSON object for the config readers (internal to lib/config);
// messages name the file and the dotted key.
#pragma once

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/deepspeed_config.h"
#include "util/error.h"
#include "util/strings.h"

namespace ftl::config {

class JsonReader {
public:
    using json = nlohmann::json;

    explicit JsonReader(std::string source) : source_(std::move(source)) {}

    [[noreturn]] void fail(const std::string& key, const std::string& rule) const {
        ftl::fail(ErrorKind::kConfig, source_ + ": " + key + ": " + rule);
    }
    static bool is_auto(const json& v) { return v.is_string() && v.get<std::string>() == "auto"; }
    const std::string& source() const { return source_; }

    long long integer(const json& v, const std::string& key, long long min) const {
        long long out = 0;
        if (v.is_number_integer()) out = v.get<long long>();
        else if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() && std::fabs(v.get<double>()) < 0x1p63)
            out = static_cast<long long>(v.get<double>());  // 5e8 as DeepSpeed configs write bucket sizes
        else fail(key, "must be an integer below 2^63 (got " + v.dump() + ")");
        if (out < min) fail(key, "must be at least " + std::to_string(min) + " (got " + v.dump() + ")");
        return out;
    }
    Auto<long long> auto_integer(const json& v, const std::string& key, long long min) const {
        if (is_auto(v)) return std::nullopt;
        return integer(v, key, min);
    }
    double number(const json& v, const std::string& key, double min) const {
        if (!v.is_number()) fail(key, "must be a number (got " + v.dump() + ")");
        if (v.get<double>() < min) fail(key, "must be at least " + json(min).dump() + " (got " + v.dump() + ")");
        return v.get<double>();
    }
    bool boolean(const json& v, const std::string& key) const {
        if (v.is_boolean()) return v.get<bool>();
        if (v.is_string())
            if (auto b = parse_bool(v.get<std::string>())) return *b;
        fail(key, "must be true or false (got " + v.dump() + ")");
    }
    Auto<double> auto_number(const json& v, const std::string& key, double min) const {
        if (is_auto(v)) return std::nullopt;
        return number(v, key, min);
    }
    Auto<bool> auto_boolean(const json& v, const std::string& key) const {
        if (is_auto(v)) return std::nullopt;
        return boolean(v, key);
    }
    std::string string(const json& v, const std::string& key) const {
        if (v.is_null()) return "";
        if (!v.is_string()) fail(key, "must be a string (got " + v.dump() + ")");
        return v.get<std::string>();
    }
    OffloadDevice device(const json& v, const std::string& key) const {
        if (v.is_null()) return OffloadDevice::kNone;
        auto d = parse_offload_device(string(v, key));
        if (!d) fail(key, "must be one of none, cpu, nvme (got " + v.dump() + ")");
        return *d;
    }
    const json& object(const json& v, const std::string& key) const {
        if (!v.is_object()) fail(key, "must be an object {...} (got " + v.dump() + ")");
        return v;
    }
    void unknown(const std::string& key, const std::string& name, const std::vector<std::string>& known,
                 std::vector<std::string>& warnings) const {
        warnings.push_back(source_ + ": unknown key " + key + " ignored" + did_you_mean(name, known));
    }

private:
    std::string source_;
};

}  // namespace ftl::config
