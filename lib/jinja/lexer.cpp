#include "jinja/lexer.h"

#include <cctype>
#include <cstdint>

#include "util/error.h"

namespace ftl::jinja {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

class Lexer {
public:
    // jinja2 reads "\r\n" and "\r" as "\n" and drops one newline at the end of the source
    // (keep_trailing_newline=False).
    Lexer(const std::string& source, const std::string& where) : where_(where) {
        for (size_t i = 0; i < source.size(); ++i) {
            if (source[i] != '\r') src_ += source[i];
            else if (i + 1 >= source.size() || source[i + 1] != '\n') src_ += '\n';
        }
        if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    }

    std::vector<Token> run() {
        bool line_starting = true;  // the previous tag ended a line (or nothing came before)
        while (pos_ < src_.size()) {
            const size_t tag = next_tag(pos_);
            std::string text = src_.substr(pos_, tag - pos_);
            if (tag == src_.size()) {
                add_text(text);
                break;
            }
            const char kind = src_[tag + 1];  // '{', '%' or '#'
            const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
            if (sign == '-') {
                size_t keep = text.size();
                while (keep > 0 && is_space(text[keep - 1])) --keep;
                text.resize(keep);
            } else if (sign != '+' && kind != '{') {
                const size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
                bool blank = true;
                for (size_t i = line_start; i < text.size(); ++i) blank = blank && is_space(text[i]);
                if ((line_start > 0 || line_starting) && blank) text.resize(line_start);
            }
            add_text(text);
            count_lines(pos_, tag);
            pos_ = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
            if (kind == '#') skip_comment();
            else if (kind == '%' && is_raw_block()) read_raw();
            else read_tag(kind == '{');
            line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
        }
        tokens_.push_back({Token::Type::kEnd, "", line_});
        return std::move(tokens_);
    }

private:
    [[noreturn]] void error(const std::string& message) const {
        fail(ErrorKind::kConfig, where_ + ": line " + std::to_string(line_) + ": " + message);
    }

    size_t next_tag(size_t from) const {
        for (size_t i = from; i + 1 < src_.size(); ++i)
            if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
        return src_.size();
    }

    void count_lines(size_t from, size_t to) {
        for (size_t i = from; i < to; ++i) line_ += src_[i] == '\n';
    }

    void add_text(const std::string& text) {
        if (!text.empty()) tokens_.push_back({Token::Type::kText, text, line_});
    }

    // After a closing "%}" / "#}": trim_blocks drops one newline; after "-%}" all whitespace goes.
    void after_block_end(bool strip_all, bool keep_newline) {
        if (strip_all) {
            while (pos_ < src_.size() && is_space(src_[pos_])) line_ += src_[pos_++] == '\n';
        } else if (!keep_newline && pos_ < src_.size() && src_[pos_] == '\n') {
            ++pos_;
            ++line_;
        }
    }

    void skip_comment() {
        const size_t end = src_.find("#}", pos_);
        if (end == std::string::npos) error("a comment ({#) is never closed");
        count_lines(pos_, end);
        const bool strip = end > pos_ && src_[end - 1] == '-';
        const bool keep = end > pos_ && src_[end - 1] == '+';
        pos_ = end + 2;
        after_block_end(strip, keep);
    }

    // "{% raw %}" (pos_ just after "{%", any sign consumed).
    bool is_raw_block() const {
        size_t i = pos_;
        while (i < src_.size() && is_space(src_[i])) ++i;
        if (src_.compare(i, 3, "raw") != 0) return false;
        i += 3;
        while (i < src_.size() && is_space(src_[i])) ++i;
        return src_.compare(i, 2, "%}") == 0 || src_.compare(i, 3, "-%}") == 0;
    }

    void read_raw() {
        const size_t open_end = src_.find("%}", pos_);
        const bool strip_after_open = src_[open_end - 1] == '-';
        pos_ = open_end + 2;
        after_block_end(strip_after_open, false);
        size_t search = pos_;
        while (true) {
            const size_t tag = src_.find("{%", search);
            if (tag == std::string::npos) error("{% raw %} is never closed by {% endraw %}");
            size_t i = tag + 2;
            const bool strip_before = i < src_.size() && src_[i] == '-';
            if (strip_before || (i < src_.size() && src_[i] == '+')) ++i;
            while (i < src_.size() && is_space(src_[i])) ++i;
            if (src_.compare(i, 6, "endraw") != 0) {
                search = tag + 2;
                continue;
            }
            std::string text = src_.substr(pos_, tag - pos_);
            if (strip_before)
                while (!text.empty() && is_space(text.back())) text.pop_back();
            add_text(text);
            count_lines(pos_, tag);
            const size_t close = src_.find("%}", i);
            if (close == std::string::npos) error("{% endraw is never closed");
            const bool strip = src_[close - 1] == '-';
            pos_ = close + 2;
            after_block_end(strip, false);
            return;
        }
    }

    void read_tag(bool variable) {
        tokens_.push_back({variable ? Token::Type::kVarBegin : Token::Type::kBlockBegin, "", line_});
        std::string open;  // the brackets open in this tag, innermost last
        while (true) {
            while (pos_ < src_.size() && is_space(src_[pos_])) line_ += src_[pos_++] == '\n';
            if (pos_ >= src_.size())
                error(!open.empty() ? "a bracket opened in a tag is never closed"
                                : std::string("a tag (") + (variable ? "{{" : "{%") + ") is never closed");
            if (open.empty() && close_tag(variable)) return;
            const char c = src_[pos_];
            if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
                const size_t start = pos_;
                while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_'))
                    ++pos_;
                tokens_.push_back({Token::Type::kName, src_.substr(start, pos_ - start), line_});
            } else if (std::isdigit(static_cast<unsigned char>(c))) {
                read_number();
            } else if (c == '\'' || c == '"') {
                read_string(c);
            } else {
                static const char* two[] = {"==", "!=", "<=", ">=", "//", "**"};
                std::string op(1, c);
                for (const char* t : two)
                    if (src_.compare(pos_, 2, t) == 0) op = t;
                if (std::string("+-*/%~<>=.,:|()[]{}!").find(c) == std::string::npos || op == "!")
                    error(std::string("unexpected character '") + c + "' in a tag");
                if (c == '(' || c == '[' || c == '{') open += c;
                if (c == ')' || c == ']' || c == '}') {
                    const char expected = open.empty() ? '\0' : open.back() == '(' ? ')' : open.back() == '[' ? ']' : '}';
                    if (c != expected) error(std::string("unexpected '") + c + "'" + (expected ? std::string(", expected '") + expected + "'" : ""));
                    open.pop_back();
                }
                pos_ += op.size();
                tokens_.push_back({Token::Type::kOperator, op, line_});
            }
        }
    }

    bool close_tag(bool variable) {
        const std::string end = variable ? "}}" : "%}";
        const bool strip = src_.compare(pos_, 3, "-" + end) == 0;
        const bool keep = !variable && src_.compare(pos_, 3, "+" + end) == 0;
        if (!strip && !keep && src_.compare(pos_, 2, end) != 0) return false;
        pos_ += strip || keep ? 3 : 2;
        tokens_.push_back({variable ? Token::Type::kVarEnd : Token::Type::kBlockEnd, "", line_});
        if (variable) {
            if (strip) after_block_end(true, false);
        } else {
            after_block_end(strip, keep);
        }
        return true;
    }

    void read_number() {
        const size_t start = pos_;
        bool is_float = false;
        auto digits = [&] {
            while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
        };
        digits();
        if (pos_ + 1 < src_.size() && src_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
            is_float = true;
            ++pos_;
            digits();
        }
        if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
            size_t i = pos_ + 1;
            if (i < src_.size() && (src_[i] == '+' || src_[i] == '-')) ++i;
            if (i < src_.size() && std::isdigit(static_cast<unsigned char>(src_[i]))) {
                is_float = true;
                pos_ = i;
                digits();
            }
        }
        std::string text;
        for (size_t i = start; i < pos_; ++i)
            if (src_[i] != '_') text += src_[i];
        tokens_.push_back({is_float ? Token::Type::kFloat : Token::Type::kInt, text, line_});
    }

    // A quoted string with Python's escapes (\n \t \r \\ \' \" \xHH \uXXXX \UXXXXXXXX; others
    // are kept with their backslash, as Python keeps them).
    void read_string(char quote) {
        std::string out;
        ++pos_;
        while (true) {
            if (pos_ >= src_.size()) error("a string is never closed");
            const char c = src_[pos_++];
            if (c == quote) break;
            if (c == '\n') ++line_;
            if (c != '\\' || pos_ >= src_.size()) {
                out += c;
                continue;
            }
            const char e = src_[pos_++];
            switch (e) {
                case 'n': out += '\n'; break;
                case 't': out += '\t'; break;
                case 'r': out += '\r'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'v': out += '\v'; break;
                case 'a': out += '\a'; break;
                case '0': out += '\0'; break;
                case '\\':
                case '\'':
                case '"': out += e; break;
                case '\n': ++line_; break;
                case 'x':
                case 'u':
                case 'U': {
                    const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    if (pos_ + n > src_.size()) error("a truncated \\" + std::string(1, e) + " escape in a string");
                    const std::string hex = src_.substr(pos_, n);
                    for (char h : hex)
                        if (!std::isxdigit(static_cast<unsigned char>(h))) error("a bad \\" + std::string(1, e) + " escape");
                    const unsigned long code = std::stoul(hex, nullptr, 16);
                    if (code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
                        error("the escape \\" + std::string(1, e) + hex + " is not a Unicode character ftlaunch can write as UTF-8");
                    append_utf8(out, static_cast<uint32_t>(code));
                    pos_ += n;
                    break;
                }
                default:
                    out += '\\';
                    out += e;
            }
        }
        tokens_.push_back({Token::Type::kString, out, line_});
    }

    std::string src_;
    const std::string& where_;
    size_t pos_ = 0;
    int line_ = 1;
    std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex(const std::string& source, const std::string& where) { return Lexer(source, where).run(); }

}  // namespace ftl::jinja
