#include "util/log.h"

#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace ftl {

namespace {

spdlog::level::level_enum to_spdlog(LogLevel level) {
    switch (level) {
        case LogLevel::kDebug: return spdlog::level::debug;
        case LogLevel::kInfo: return spdlog::level::info;
        case LogLevel::kWarning: return spdlog::level::warn;
        case LogLevel::kError: return spdlog::level::err;
    }
    return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& prefix, spdlog::sink_ptr sink) {
    auto logger = std::make_shared<spdlog::logger>(prefix, std::move(sink));
    // "[prefix] warning: text"; the level word is omitted for info lines.
    logger->set_pattern("[" + prefix + "] %v");
    logger->flush_on(spdlog::level::debug);
    return logger;
}

}  // namespace

LogLevel parse_log_level(const std::string& name) {
    if (name == "debug" || name == "detail") return LogLevel::kDebug;
    if (name == "info") return LogLevel::kInfo;
    if (name == "error" || name == "critical") return LogLevel::kError;
    return LogLevel::kWarning;  // "warning" and HF's "passive"
}

Log::Log(const std::string& prefix, LogLevel level)
    : out_(make_logger(prefix, std::make_shared<spdlog::sinks::stdout_sink_mt>())),
      err_(make_logger(prefix, std::make_shared<spdlog::sinks::stderr_sink_mt>())) {
    set_level(level);
}

Log::~Log() = default;

void Log::set_level(LogLevel level) {
    out_->set_level(to_spdlog(level));
    err_->set_level(to_spdlog(level));
}

void Log::debug(const std::string& message) const { out_->debug(message); }
void Log::info(const std::string& message) const { out_->info(message); }
void Log::warn(const std::string& message) const { err_->warn("warning: " + message); }
void Log::error(const std::string& message) const { err_->error("error: " + message); }

}  // namespace ftl
