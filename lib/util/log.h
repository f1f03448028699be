// Logging facade over spdlog. One Log object is made by the app (launcher or worker) and
// passed by reference to whatever needs to report; there is no global logger.
// Lines look like "[ftlaunch] warning: ..." in the launcher and "[rank 1/4] ..." in workers.
#pragma once

#include <memory>
#include <string>

namespace spdlog {
class logger;
}

namespace ftl {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Parses HF's --log_level values: debug, info, warning, error, critical, passive (= warning).
LogLevel parse_log_level(const std::string& name);

class Log {
public:
    // `prefix` goes in brackets before every line; info and debug go to stdout, warnings and
    // errors to stderr.
    explicit Log(const std::string& prefix, LogLevel level = LogLevel::kInfo);
    ~Log();
    Log(const Log&) = delete;
    Log& operator=(const Log&) = delete;

    void set_level(LogLevel level);
    void debug(const std::string& message) const;
    void info(const std::string& message) const;
    void warn(const std::string& message) const;
    void error(const std::string& message) const;

private:
    std::shared_ptr<spdlog::logger> out_;  // debug, info
    std::shared_ptr<spdlog::logger> err_;  // warning, error
};

}  // namespace ftl
