#include "catch.h"
#include "util/strings.h"

using namespace ftl;

TEST_CASE("parse_bool reads HfArgumentParser's spellings", "[util]") {
    for (const char* t : {"True", "true", "YES", "y", "t", "1"}) CHECK(parse_bool(t) == std::optional<bool>(true));
    for (const char* f : {"False", "no", "N", "f", "0"}) CHECK(parse_bool(f) == std::optional<bool>(false));
    CHECK_FALSE(parse_bool("maybe").has_value());
    CHECK_FALSE(parse_bool("").has_value());
}

TEST_CASE("numbers parse whole strings only", "[util]") {
    CHECK(parse_int("42") == std::optional<long long>(42));
    CHECK(parse_int("-1") == std::optional<long long>(-1));
    CHECK_FALSE(parse_int("4x").has_value());
    CHECK_FALSE(parse_int("").has_value());
    CHECK(parse_double("1e-4") == std::optional<double>(1e-4));
    CHECK_FALSE(parse_double("1e-4z").has_value());
}

TEST_CASE("closest_match suggests plausible typos and nothing else", "[util]") {
    const std::vector<std::string> keys = {"zero_stage", "num_processes", "mixed_precision"};
    CHECK(closest_match("num_process", keys) == std::optional<std::string>("num_processes"));
    CHECK(closest_match("zero_stag", keys) == std::optional<std::string>("zero_stage"));
    CHECK_FALSE(closest_match("completely_else", keys).has_value());
    CHECK(edit_distance("kitten", "sitting") == 3);
}

TEST_CASE("split keeps empty pieces, join inverts it", "[util]") {
    CHECK(split("a,,b", ',') == std::vector<std::string>{"a", "", "b"});
    CHECK(join(split("a,,b", ','), ",") == "a,,b");
}
