// safetensors read/write, checkpoint folders and hub-cache resolution, including every kind of
// broken file the issue lists: each must be a clear ftl::Error naming the file, never a crash.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "catch.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/hub.h"
#include "io/safetensors_writer.h"

using namespace ftl;
using namespace ftl::io;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        char templ[] = "/tmp/ftl_io_test_XXXXXX";
        path = ::mkdtemp(templ);
    }
    ~TempDir() { fs::remove_all(path); }
    std::string file(const std::string& name) const { return (path / name).string(); }
};

TensorView view_of(const std::vector<float>& values, std::vector<int64_t> shape) {
    return {DType::kF32, std::move(shape), reinterpret_cast<const std::byte*>(values.data()),
            values.size() * sizeof(float)};
}

// A raw file: 8-byte length + header text + `data_bytes` zero bytes.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes,
               uint64_t declared_length) {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((declared_length >> (8 * i)) & 0xff));
    out << header << std::string(data_bytes, '\0');
}
void write_raw(const std::string& path, const std::string& header, size_t data_bytes) {
    write_raw(path, header, data_bytes, header.size());
}

}  // namespace

TEST_CASE("safetensors round trip keeps dtype, shape, bytes and metadata", "[io]") {
    TempDir dir;
    std::vector<float> a{1, 2, 3, 4, 5, 6};
    std::vector<uint16_t> b{0x3f80, 0x4000};  // bf16 1.0, 2.0
    std::vector<NamedTensor> tensors{
        {"layer.weight", view_of(a, {3, 2})},
        {"layer.bias", {DType::kBF16, {2}, reinterpret_cast<const std::byte*>(b.data()), 4}}};
    write_safetensors(dir.file("x.safetensors"), tensors, {{"format", "pt"}});

    auto file = SafetensorsFile::open(dir.file("x.safetensors"));
    CHECK(file->header().metadata.at("format") == "pt");
    CHECK(file->header().data_start % 8 == 0);
    TensorView w = file->tensor("layer.weight");
    CHECK(w.dtype == DType::kF32);
    CHECK(w.shape == std::vector<int64_t>{3, 2});
    CHECK(std::memcmp(w.data, a.data(), 24) == 0);
    TensorView rows = w.rows(1, 3);
    CHECK(rows.shape == std::vector<int64_t>{2, 2});
    CHECK(reinterpret_cast<const float*>(rows.data)[0] == 3.0f);
    CHECK(file->tensor("layer.bias").dtype == DType::kBF16);
    FTL_REQUIRE_ERROR(file->tensor("layer.weights"), ErrorKind::kIo, "no tensor named 'layer.weights'",
                      "did you mean 'layer.weight'");
    FTL_REQUIRE_ERROR(w.rows(2, 4), ErrorKind::kInternal, "outside");
}

TEST_CASE("sharded checkpoints write an index and load through it", "[io]") {
    TempDir dir;
    std::vector<float> a(100, 1.0f), b(100, 2.0f), c(10, 3.0f);
    std::vector<NamedTensor> tensors{{"a", view_of(a, {100})}, {"b", view_of(b, {10, 10})},
                                     {"c", view_of(c, {10})}};
    auto shards = write_sharded_safetensors(dir.path.string(), tensors, 500);
    REQUIRE(shards.size() == 2);
    CHECK(shards[0] == "model-00001-of-00002.safetensors");
    CHECK(fs::exists(dir.file("model.safetensors.index.json")));

    Checkpoint ckpt = Checkpoint::open(dir.path.string());
    CHECK(ckpt.names() == std::vector<std::string>{"a", "b", "c"});
    CHECK(reinterpret_cast<const float*>(ckpt.tensor("c").data)[9] == 3.0f);
    CHECK(ckpt.file_of("c").path() == dir.file(shards[1]));

    fs::remove(dir.file(shards[1]));
    FTL_REQUIRE_ERROR(Checkpoint::open(dir.path.string()), ErrorKind::kIo, shards[1], "missing",
                      "holding 'b'");
}

TEST_CASE("a single shard is written as model.safetensors without an index", "[io]") {
    TempDir dir;
    std::vector<float> a(4, 1.0f);
    auto shards = write_sharded_safetensors(dir.path.string(), {{"a", view_of(a, {4})}}, 1 << 20);
    CHECK(shards == std::vector<std::string>{"model.safetensors"});
    CHECK_FALSE(fs::exists(dir.file("model.safetensors.index.json")));
    CHECK(Checkpoint::open(dir.path.string()).contains("a"));
}

TEST_CASE("broken safetensors files are clear errors", "[io]") {
    TempDir dir;
    const std::string p = dir.file("bad.safetensors");
    const std::string ok = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

    write_raw(p, ok, 8);
    CHECK(SafetensorsFile::open(p)->contains("t"));

    write_raw(p, ok, 4);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, p, "truncated");
    write_raw(p, ok, 8, 1000);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, p, "runs past the end");
    write_raw(p, ok, 8, 1ull << 40);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, "100 MB");
    write_raw(p, R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, "not a JSON object");
    write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, "overlap");
    write_raw(p, R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,80]}})", 8);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, "80 bytes");
    write_raw(p, R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, "need 12");
    write_raw(p, R"({"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, "unsupported dtype 'Q4'", "BF16");
    write_raw(p, R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, "non-negative");
    write_raw(p, "", 0);
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, "start with '{'");
    { std::ofstream(p) << "abc"; }
    FTL_REQUIRE_ERROR(SafetensorsFile::open(p), ErrorKind::kIo, "shorter than");
    FTL_REQUIRE_ERROR(SafetensorsFile::open(dir.file("none.safetensors")), ErrorKind::kIo, "cannot open");
}

TEST_CASE("checkpoint folders without safetensors weights say what they hold", "[io]") {
    TempDir dir;
    { std::ofstream(dir.file("pytorch_model.bin")) << "x"; }
    FTL_REQUIRE_ERROR(Checkpoint::open(dir.path.string()), ErrorKind::kIo, "pytorch_model.bin",
                      "save_pretrained");
    { std::ofstream(dir.file("model.safetensors.index.json")) << "{not json"; }
    FTL_REQUIRE_ERROR(Checkpoint::open(dir.path.string()), ErrorKind::kIo, "weight_map");
}

TEST_CASE("atomic writes leave the old file when writing fails", "[io]") {
    TempDir dir;
    const std::string p = dir.file("state.json");
    write_file_atomically(p, [](std::ostream& out) { out << "old"; });
    CHECK_THROWS(write_file_atomically(p, [](std::ostream& out) {
        out << "half";
        fail(ErrorKind::kIo, "disk full");
    }));
    std::ifstream in(p);
    std::string text;
    in >> text;
    CHECK(text == "old");
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
    FTL_REQUIRE_ERROR(write_file_atomically(dir.file("no/such/dir/x"), [](std::ostream&) {}),
                      ErrorKind::kIo, "does not exist");
}

TEST_CASE("hub cache resolution follows refs and pinned commits", "[io]") {
    TempDir dir;
    HubCache cache{dir.path.string()};
    const std::string commit_main(40, 'a'), commit_old(40, 'b');
    const fs::path repo = dir.path / "models--org--tiny";
    fs::create_directories(repo / "refs");
    fs::create_directories(repo / "snapshots" / commit_main);
    fs::create_directories(repo / "snapshots" / commit_old);
    { std::ofstream(repo / "refs" / "main") << commit_main; }

    CHECK(resolve_repo_dir("org/tiny", cache) == (repo / "snapshots" / commit_main).string());
    CHECK(resolve_repo_dir("org/tiny", cache, RepoType::kModel, commit_old) ==
          (repo / "snapshots" / commit_old).string());
    CHECK(resolve_repo_dir(dir.path.string(), cache) == dir.path.string());
    FTL_REQUIRE_ERROR(resolve_repo_dir("org/tiny", cache, RepoType::kModel, "v2"), ErrorKind::kConfig,
                      "revision v2", "huggingface-cli download org/tiny --revision v2");
    FTL_REQUIRE_ERROR(resolve_repo_dir("org/other", cache, RepoType::kDataset), ErrorKind::kConfig,
                      "--repo-type dataset org/other");
    FTL_REQUIRE_ERROR(resolve_repo_dir("./missing/dir/x", cache), ErrorKind::kConfig, "no such folder");
}
