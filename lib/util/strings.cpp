#include "util/strings.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

namespace ftl {

std::string trim(std::string_view s) {
    size_t begin = 0, end = s.size();
    while (begin < end && std::isspace(static_cast<unsigned char>(s[begin]))) ++begin;
    while (end > begin && std::isspace(static_cast<unsigned char>(s[end - 1]))) --end;
    return std::string(s.substr(begin, end - begin));
}

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (true) {
        size_t pos = s.find(sep, start);
        if (pos == std::string_view::npos) {
            parts.emplace_back(s.substr(start));
            return parts;
        }
        parts.emplace_back(s.substr(start, pos - start));
        start = pos + 1;
    }
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
    std::string out;
    for (size_t i = 0; i < parts.size(); ++i) {
        if (i) out += sep;
        out += parts[i];
    }
    return out;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.starts_with(prefix); }
bool ends_with(std::string_view s, std::string_view suffix) { return s.ends_with(suffix); }

std::optional<bool> parse_bool(std::string_view s) {
    const std::string v = to_lower(trim(s));
    if (v == "yes" || v == "true" || v == "t" || v == "y" || v == "1") return true;
    if (v == "no" || v == "false" || v == "f" || v == "n" || v == "0") return false;
    return std::nullopt;
}

std::optional<long long> parse_int(std::string_view s) {
    const std::string v = trim(s);
    if (v.empty()) return std::nullopt;
    char* end = nullptr;
    errno = 0;
    long long value = std::strtoll(v.c_str(), &end, 10);
    if (errno != 0 || end != v.c_str() + v.size()) return std::nullopt;
    return value;
}

std::optional<double> parse_double(std::string_view s) {
    const std::string v = trim(s);
    if (v.empty()) return std::nullopt;
    char* end = nullptr;
    errno = 0;
    double value = std::strtod(v.c_str(), &end);
    if (errno != 0 || end != v.c_str() + v.size()) return std::nullopt;
    return value;
}

std::optional<int64_t> parse_byte_size(std::string_view s) {
    const std::string t = to_lower(trim(s));
    const std::pair<const char*, double> units[] = {{"gib", 1024.0 * 1024 * 1024}, {"mib", 1024.0 * 1024}, {"kib", 1024.0},
                                                    {"gb", 1e9}, {"mb", 1e6}, {"kb", 1e3}, {"b", 1.0}};
    for (const auto& [suffix, scale] : units)
        if (ends_with(t, suffix)) {
            const auto number = parse_double(t.substr(0, t.size() - std::string(suffix).size()));
            if (!number || !(*number > 0)) return std::nullopt;
            return static_cast<int64_t>(*number * scale);
        }
    const auto bytes = parse_int(t);
    if (!bytes || *bytes <= 0) return std::nullopt;
    return static_cast<int64_t>(*bytes);
}

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = above;
        }
    }
    return row[b.size()];
}

std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string>& candidates) {
    const size_t limit = std::max<size_t>(2, word.size() / 3);
    std::optional<std::string> best;
    size_t best_distance = limit + 1;
    for (const auto& candidate : candidates) {
        size_t d = edit_distance(word, candidate);
        // A candidate that contains the word (or the reverse) is a likely intent too:
        // "--max_seq" -> "--max_seq_length".
        if (d > limit && word.size() >= 4 &&
            (candidate.find(word) != std::string::npos || word.find(candidate) != std::string_view::npos))
            d = limit;
        if (d < best_distance) {
            best_distance = d;
            best = candidate;
        }
    }
    return best;
}

std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
    auto match = closest_match(word, candidates);
    return match ? " (did you mean '" + *match + "'?)" : "";
}

size_t valid_utf8_sequence(std::string_view s, size_t i) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    if (c < 0x80) return 1;
    const size_t n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return 0;
    for (size_t k = 1; k < n; ++k)
        if ((b(i + k) & 0xC0) != 0x80) return 0;
    if (n == 2 && c < 0xC2) return 0;
    if (n == 3 && ((c == 0xE0 && b(i + 1) < 0xA0) || (c == 0xED && b(i + 1) >= 0xA0))) return 0;
    if (n == 4 && ((c == 0xF0 && b(i + 1) < 0x90) || (c == 0xF4 && b(i + 1) >= 0x90) || c > 0xF4)) return 0;
    return n;
}

std::optional<size_t> first_invalid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        const size_t n = valid_utf8_sequence(s, i);
        if (n == 0) return i;
        i += n;
    }
    return std::nullopt;
}

}  // namespace ftl
