#include "data/csv_reader.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>

#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

namespace ftl::data {
namespace {

struct Field {
    std::string text;
    bool quoted = false;
};

struct Record {
    std::vector<Field> fields;
    int line = 0;  // where the record starts, 1-based
};

bool blank_line_at(const std::string& text, size_t pos) {
    for (; pos < text.size(); ++pos) {
        if (text[pos] == '\n' || text[pos] == '\r') return true;
        if (text[pos] != ' ' && text[pos] != '\t') return false;
    }
    return true;
}

// Splits the text into records (pandas' C tokenizer with skip_blank_lines): fields separated by
// commas; a field that starts with '"' runs to the matching quote, "" standing for one quote
// and separators and newlines kept; what follows the closing quote up to the separator joins
// the field; a quote elsewhere is literal. \n, \r\n and \r end a record; lines of nothing but
// spaces and tabs are skipped.
std::vector<Record> split_records(const std::string& text, const std::string& source) {
    std::vector<Record> records;
    size_t pos = text.rfind("\xEF\xBB\xBF", 0) == 0 ? 3 : 0;  // a UTF-8 byte-order mark
    int line = 1;
    auto end_of_line = [&](size_t& p) {
        if (text[p] == '\r' && p + 1 < text.size() && text[p + 1] == '\n') ++p;
        ++p;
        ++line;
    };
    while (pos < text.size()) {
        if (blank_line_at(text, pos)) {
            while (pos < text.size() && text[pos] != '\n' && text[pos] != '\r') ++pos;
            if (pos < text.size()) end_of_line(pos);
            continue;
        }
        Record record;
        record.line = line;
        Field field;
        bool in_quotes = false;
        int quote_line = 0;
        while (true) {
            if (pos == text.size()) {
                if (in_quotes)
                    fail(ErrorKind::kConfig, source + ":" + std::to_string(quote_line) +
                                                 ": a quoted field is not closed before the end of the file");
                record.fields.push_back(std::move(field));
                break;
            }
            const char c = text[pos];
            if (in_quotes) {
                if (c == '"' && pos + 1 < text.size() && text[pos + 1] == '"') {
                    field.text += '"';
                    pos += 2;
                } else if (c == '"') {
                    in_quotes = false;
                    ++pos;
                } else {
                    if (c == '\n' || (c == '\r' && (pos + 1 == text.size() || text[pos + 1] != '\n'))) ++line;
                    field.text += c;
                    ++pos;
                }
            } else if (c == ',') {
                record.fields.push_back(std::move(field));
                field = Field{};
                ++pos;
            } else if (c == '\n' || c == '\r') {
                record.fields.push_back(std::move(field));
                end_of_line(pos);
                break;
            } else if (c == '"' && field.text.empty() && !field.quoted) {
                in_quotes = field.quoted = true;
                quote_line = line;
                ++pos;
            } else {
                field.text += c;
                ++pos;
            }
        }
        records.push_back(std::move(record));
    }
    return records;
}

// pandas' default na_values (keep_default_na=True); quoted or not.
bool is_missing(const std::string& s) {
    static const std::set<std::string> kMissing{"",     "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN",
                                                "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",    "NA",       "NULL",
                                                "NaN",  "None", "n/a",     "nan", "null"};
    return kMissing.count(s) > 0;
}

std::string_view trimmed(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

std::optional<int64_t> as_int(const std::string& s) {
    const std::string_view t = trimmed(s);
    size_t i = (!t.empty() && (t[0] == '+' || t[0] == '-')) ? 1 : 0;
    if (i == t.size()) return std::nullopt;
    for (size_t j = i; j < t.size(); ++j)
        if (t[j] < '0' || t[j] > '9') return std::nullopt;
    errno = 0;
    const std::string digits(t);
    const long long v = std::strtoll(digits.c_str(), nullptr, 10);
    if (errno == ERANGE) return std::nullopt;
    return static_cast<int64_t>(v);
}

// Decimal notation with an optional exponent, or inf/infinity with an optional sign.
std::optional<double> as_float(const std::string& s) {
    const std::string_view t = trimmed(s);
    std::string_view body = t;
    const bool negative = !body.empty() && body[0] == '-';
    if (!body.empty() && (body[0] == '+' || body[0] == '-')) body.remove_prefix(1);
    const std::string lower = to_lower(std::string(body));
    if (lower == "inf" || lower == "infinity")
        return negative ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    size_t i = 0, digits = 0;
    while (i < body.size() && body[i] >= '0' && body[i] <= '9') ++i, ++digits;
    if (i < body.size() && body[i] == '.') {
        ++i;
        while (i < body.size() && body[i] >= '0' && body[i] <= '9') ++i, ++digits;
    }
    if (digits == 0) return std::nullopt;
    if (i < body.size() && (body[i] == 'e' || body[i] == 'E')) {
        ++i;
        if (i < body.size() && (body[i] == '+' || body[i] == '-')) ++i;
        const size_t exponent_start = i;
        while (i < body.size() && body[i] >= '0' && body[i] <= '9') ++i;
        if (i == exponent_start) return std::nullopt;
    }
    if (i != body.size()) return std::nullopt;
    return std::strtod(std::string(t).c_str(), nullptr);
}

std::optional<bool> as_bool(const std::string& s) {
    if (s == "True" || s == "TRUE" || s == "true") return true;
    if (s == "False" || s == "FALSE" || s == "false") return false;
    return std::nullopt;
}

enum class Kind { kInt, kFloat, kBool, kString };

// The column's kind from its present values, as pandas infers a dtype.
Kind kind_of(const std::vector<const std::string*>& values) {
    bool ints = true, floats = true, bools = true;
    for (const std::string* v : values) {
        ints = ints && as_int(*v).has_value();
        floats = floats && as_float(*v).has_value();
        bools = bools && as_bool(*v).has_value();
    }
    return bools ? Kind::kBool : ints ? Kind::kInt : floats ? Kind::kFloat : Kind::kString;
}

// Header names as pandas makes them: an empty one is "Unnamed: <index>", a repeated one gets
// ".1", ".2", ... until unique.
std::vector<std::string> column_names(const Record& header) {
    std::vector<std::string> names;
    std::set<std::string> taken;
    for (size_t i = 0; i < header.fields.size(); ++i) {
        std::string name = header.fields[i].text.empty() ? "Unnamed: " + std::to_string(i) : header.fields[i].text;
        if (taken.count(name)) {
            int suffix = 1;
            while (taken.count(name + "." + std::to_string(suffix))) ++suffix;
            name += "." + std::to_string(suffix);
        }
        taken.insert(name);
        names.push_back(name);
    }
    return names;
}

}  // namespace

void parse_csv(const std::string& text, const std::string& source, std::vector<nlohmann::ordered_json>& out) {
    if (const auto bad = first_invalid_utf8(text))
        fail(ErrorKind::kConfig, source + ": not UTF-8 text (invalid byte at offset " + std::to_string(*bad) + ")");
    const std::vector<Record> records = split_records(text, source);
    if (records.empty()) return;
    const std::vector<std::string> names = column_names(records.front());
    const size_t columns = names.size(), rows = records.size() - 1;
    for (size_t r = 1; r < records.size(); ++r)
        if (records[r].fields.size() > columns)
            fail(ErrorKind::kConfig, source + ":" + std::to_string(records[r].line) + ": " +
                                         std::to_string(records[r].fields.size()) + " fields where the header has " +
                                         std::to_string(columns));
    std::vector<nlohmann::ordered_json> rows_out(rows, nlohmann::ordered_json::object());
    for (size_t c = 0; c < columns; ++c) {
        std::vector<const std::string*> present;
        bool any_missing = false;
        for (size_t r = 1; r < records.size(); ++r) {
            const auto& fields = records[r].fields;
            if (c < fields.size() && !is_missing(fields[c].text)) present.push_back(&fields[c].text);
            else any_missing = true;
        }
        const Kind kind = kind_of(present);
        for (size_t r = 1; r < records.size(); ++r) {
            const auto& fields = records[r].fields;
            nlohmann::ordered_json& cell = rows_out[r - 1][names[c]];
            if (c >= fields.size() || is_missing(fields[c].text)) {
                cell = nullptr;
                continue;
            }
            const std::string& v = fields[c].text;
            switch (kind) {
                case Kind::kBool: cell = *as_bool(v); break;
                case Kind::kInt:
                    if (any_missing) cell = static_cast<double>(*as_int(v));  // pandas: float64 with NaN
                    else cell = *as_int(v);
                    break;
                case Kind::kFloat: cell = *as_float(v); break;
                case Kind::kString: cell = v; break;
            }
        }
    }
    for (auto& row : rows_out) out.push_back(std::move(row));
}

void read_csv(const std::string& path, std::vector<nlohmann::ordered_json>& out) {
    const auto text = read_text_file(path);
    if (!text) fail(ErrorKind::kIo, path + ": cannot read");
    parse_csv(*text, path, out);
}

}  // namespace ftl::data
