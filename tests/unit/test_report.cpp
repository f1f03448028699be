#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "catch.h"
#include "config/train_args.h"
#include "report/charts.h"
#include "report/event_file.h"
#include "util/checksum.h"
#include "report/html_report.h"
#include "report/metrics_log.h"

using namespace ftl;

namespace {

std::string temp_dir(const std::string& name) {
    const auto dir = std::filesystem::temp_directory_path() / ("ftl_report_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir.string();
}

}  // namespace

TEST_CASE("crc32c matches the Castagnoli check values, whole or in pieces", "[report]") {
    CHECK(ftl::crc32c_extend(ftl::crc32c_extend(0, "1234", 4), "56789", 5) == 0xE3069283u);
    CHECK(ftl::crc32c("123456789", 9) == 0xE3069283u);  // the standard check value
    CHECK(ftl::crc32c("", 0) == 0u);
    const std::string zeros(32, '\0');
    CHECK(ftl::crc32c(zeros.data(), zeros.size()) == 0x8A9136AAu);  // RFC 3720 B.4
}

TEST_CASE("an event file is TFRecord-framed: brain.Event:2 first, then one record per scalar", "[report]") {
    const std::string dir = temp_dir("events");
    std::string path;
    {
        report::EventFileWriter writer(dir);
        writer.add_scalar("train/loss", 1.5, 3, 100.0);
        path = writer.path();
    }
    CHECK(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0) == 0);
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto masked = [](const void* data, size_t size) {
        const uint32_t crc = ftl::crc32c(data, size);
        return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
    };
    std::vector<std::string> records;
    size_t at = 0;
    while (at + 12 <= bytes.size()) {
        uint64_t length = 0;
        uint32_t length_crc = 0, data_crc = 0;
        std::memcpy(&length, bytes.data() + at, 8);
        std::memcpy(&length_crc, bytes.data() + at + 8, 4);
        CHECK(length_crc == masked(&length, 8));
        REQUIRE(at + 12 + length + 4 <= bytes.size());
        const std::string data = bytes.substr(at + 12, length);
        std::memcpy(&data_crc, bytes.data() + at + 12 + length, 4);
        CHECK(data_crc == masked(data.data(), data.size()));
        records.push_back(data);
        at += 12 + length + 4;
    }
    CHECK(at == bytes.size());
    REQUIRE(records.size() == 2);
    CHECK(records[0].find("brain.Event:2") != std::string::npos);
    CHECK(records[1].find("train/loss") != std::string::npos);
    float value = 0;  // Value.simple_value: field 2, fixed32 (key byte 0x15), the record's last 4 bytes
    REQUIRE(records[1].size() > 5);
    CHECK(static_cast<uint8_t>(records[1][records[1].size() - 5]) == 0x15);
    std::memcpy(&value, records[1].data() + records[1].size() - 4, 4);
    CHECK(value == 1.5f);
    std::filesystem::remove_all(dir);
}

TEST_CASE("metrics.jsonl: a cut-off last line is left out, a bad middle line is an error", "[report]") {
    const std::string dir = temp_dir("metrics");
    const std::string path = dir + "/metrics.jsonl";
    {
        report::MetricsLog log(path, false);
        log.write({{"kind", "start"}});
        log.write({{"kind", "train"}, {"step", 1}, {"loss", 2.0}});
    }
    {
        std::ofstream(path, std::ios::app) << "{\"kind\":\"tra";  // a crash mid-line
    }
    const report::MetricsFile file = report::read_metrics(path);
    REQUIRE(file.records.size() == 2);
    CHECK(file.incomplete_last_line);
    CHECK(file.records[1]["schema"] == report::kMetricsSchema);
    CHECK(file.records[1]["loss"] == 2.0);
    {
        std::ofstream(path, std::ios::app) << "\n{\"kind\":\"end\"}\n";
    }
    FTL_REQUIRE_ERROR(report::read_metrics(path), ErrorKind::kConfig, path + ":3", "not a JSON object");
    {
        report::MetricsLog log(path, false);  // a new run starts the file anew
        log.write({{"kind", "start"}});
    }
    CHECK(report::read_metrics(path).records.size() == 1);
    std::filesystem::remove_all(dir);
}

TEST_CASE("the report names a run without an end record and escapes what it shows", "[report]") {
    report::MetricsFile file;
    file.records = {{{"kind", "start"}, {"time", 0.0}, {"world_size", 1}, {"run", {{"note", "<b>"}}}},
                    {{"kind", "train"}, {"time", 1.0}, {"step", 1}, {"loss", 3.0}, {"peak_memory_bytes", {1024}}}};
    const std::string page = report::build_report_html(file, "x/metrics.jsonl");
    CHECK(page.find("no end record") != std::string::npos);
    CHECK(page.find("&lt;b&gt;") != std::string::npos);
    CHECK(page.find("<b>") == std::string::npos);
    CHECK(page.find("data-series=\"train/loss\"") != std::string::npos);
    CHECK(page.find("<script") == std::string::npos);
    const std::string empty = report::render_svg({"Loss", "step", "loss", {{"train/loss", {}}}});
    CHECK(empty.find("no data yet") != std::string::npos);
}

TEST_CASE("--report_to reads HF's names, warns about online ones, rejects unknown ones", "[report]") {
    CHECK_FALSE(config::report_targets("none").tensorboard);
    CHECK(config::report_targets("all").tensorboard);
    const config::ReportTargets both = config::report_targets("tensorboard, wandb");
    CHECK(both.tensorboard);
    CHECK(both.online == std::vector<std::string>{"wandb"});
    FTL_REQUIRE_ERROR(config::report_targets("tensorbord"), ErrorKind::kUsage, "'tensorbord'", "tensorboard");
}
