// Catch2 v2 (Debian 12: one header) and v3 (the GPU image: split headers) behind one include.
// Test files that use LibTorch include their ATen/c10 headers first and this header last: c10
// defines a glog-style CHECK macro, which is replaced here by Catch2's.
#pragma once
#ifdef CHECK
#undef CHECK
#endif
#if FTL_CATCH2_MAJOR >= 3
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#else
#include <catch2/catch.hpp>
#endif

#include <string>

#include "util/error.h"

// Runs `expr`, expects ftl::Error of `kind` whose message contains every fragment.
#define FTL_REQUIRE_ERROR(expr, error_kind, ...)                                   \
    do {                                                                           \
        bool ftl_thrown = false;                                                   \
        try {                                                                      \
            (void)(expr);                                                          \
        } catch (const ftl::Error& ftl_error) {                                    \
            ftl_thrown = true;                                                     \
            INFO("message: " << ftl_error.what());                                \
            CHECK(ftl_error.kind() == (error_kind));                               \
            for (const std::string& ftl_fragment : std::initializer_list<std::string>{__VA_ARGS__})                \
                CHECK_THAT(ftl_error.what(), Catch::Matchers::Contains(ftl_fragment)); \
        }                                                                          \
        CHECK(ftl_thrown);                                                         \
    } while (0)
