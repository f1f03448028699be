#include "data/arrow_reader.h"

#include <filesystem>

#include "util/error.h"

#ifdef FTL_HAVE_ARROW
#include <arrow/api.h>
#include <arrow/io/file.h>
#include <arrow/ipc/reader.h>
#include <parquet/arrow/reader.h>
#include <parquet/exception.h>
#include <parquet/file_reader.h>
#include <parquet/metadata.h>
#include <parquet/schema.h>
#endif

namespace ftl::data {

#ifdef FTL_HAVE_ARROW
namespace {

template <typename T>
T value_or_fail(arrow::Result<T> result, const std::string& path) {
    if (!result.ok()) fail(ErrorKind::kIo, path + ": " + result.status().ToString());
    return std::move(result).ValueUnsafe();
}

nlohmann::ordered_json value_at(const arrow::Array& array, int64_t i, const std::string& where) {
    if (array.IsNull(i)) return nullptr;
    switch (array.type_id()) {
        case arrow::Type::STRING: return static_cast<const arrow::StringArray&>(array).GetString(i);
        case arrow::Type::LARGE_STRING: return static_cast<const arrow::LargeStringArray&>(array).GetString(i);
        case arrow::Type::BOOL: return static_cast<const arrow::BooleanArray&>(array).Value(i);
        case arrow::Type::INT8: return static_cast<const arrow::Int8Array&>(array).Value(i);
        case arrow::Type::INT16: return static_cast<const arrow::Int16Array&>(array).Value(i);
        case arrow::Type::INT32: return static_cast<const arrow::Int32Array&>(array).Value(i);
        case arrow::Type::INT64: return static_cast<const arrow::Int64Array&>(array).Value(i);
        case arrow::Type::UINT8: return static_cast<const arrow::UInt8Array&>(array).Value(i);
        case arrow::Type::UINT16: return static_cast<const arrow::UInt16Array&>(array).Value(i);
        case arrow::Type::UINT32: return static_cast<const arrow::UInt32Array&>(array).Value(i);
        case arrow::Type::UINT64: return static_cast<const arrow::UInt64Array&>(array).Value(i);
        case arrow::Type::FLOAT: return static_cast<const arrow::FloatArray&>(array).Value(i);
        case arrow::Type::DOUBLE: return static_cast<const arrow::DoubleArray&>(array).Value(i);
        case arrow::Type::LIST:
        case arrow::Type::LARGE_LIST: {
            std::shared_ptr<arrow::Array> items;
            if (array.type_id() == arrow::Type::LIST) items = static_cast<const arrow::ListArray&>(array).value_slice(i);
            else items = static_cast<const arrow::LargeListArray&>(array).value_slice(i);
            nlohmann::ordered_json list = nlohmann::ordered_json::array();
            for (int64_t k = 0; k < items->length(); ++k) list.push_back(value_at(*items, k, where));
            return list;
        }
        case arrow::Type::STRUCT: {
            const auto& s = static_cast<const arrow::StructArray&>(array);
            nlohmann::ordered_json object = nlohmann::ordered_json::object();
            for (int f = 0; f < s.num_fields(); ++f)
                object[s.struct_type()->field(f)->name()] = value_at(*s.field(f), i, where);
            return object;
        }
        default:
            fail(ErrorKind::kConfig, where + ": column type " + array.type()->ToString() +
                                         " has no JSON form here (strings, numbers, booleans, lists and structs are read)");
    }
}

void append_table(const arrow::Table& table, const std::string& path, std::vector<nlohmann::ordered_json>& out) {
    auto combined = value_or_fail(table.CombineChunksToBatch(), path);
    // Arrow's readers check the framing, not the data: offsets inside their buffers, UTF-8 in
    // string columns. Reading the values of an unchecked file can run off its buffers.
    const arrow::Status valid = combined->ValidateFull();
    if (!valid.ok()) fail(ErrorKind::kIo, path + ": damaged Arrow data (" + valid.ToString() + ")");
    // A row costs at least a bit of some buffer (a validity bit, a boolean), except in columns of
    // the null type or in a batch without columns, whose row count nothing backs: a damaged count
    // there would make billions of records.
    const uint64_t file_bytes = std::filesystem::file_size(path);
    if (static_cast<uint64_t>(combined->num_rows()) > 8 * file_bytes)
        fail(ErrorKind::kIo, path + ": damaged Arrow data (" + std::to_string(combined->num_rows()) + " rows declared in a file of " +
                                 std::to_string(file_bytes) + " bytes)");
    const size_t first = out.size();
    out.resize(first + static_cast<size_t>(combined->num_rows()), nlohmann::ordered_json::object());
    for (int c = 0; c < combined->num_columns(); ++c) {
        const std::string name = combined->schema()->field(c)->name();
        const auto& column = *combined->column(c);
        const std::string where = path + ": column '" + name + "'";
        for (int64_t r = 0; r < combined->num_rows(); ++r) out[first + static_cast<size_t>(r)][name] = value_at(column, r, where);
    }
}

// Arrow sizes its buffers from the row counts in the footer before it reads a page, so a
// damaged count (a row group claiming billions of rows over a few values) would allocate
// gigabytes. Every row of a row group has at least one value (or null) in each column chunk, and
// the row groups add up to the file's rows.
void check_row_counts(const parquet::FileMetaData& metadata, const std::string& path) {
    int64_t rows = 0;
    for (int g = 0; g < metadata.num_row_groups(); ++g) {
        const auto group = metadata.RowGroup(g);
        const int64_t group_rows = group->num_rows();
        for (int c = 0; c < group->num_columns(); ++c) {
            const auto chunk = group->ColumnChunk(c);
            if (group_rows < 0 || chunk->num_values() < group_rows)
                fail(ErrorKind::kIo, path + ": damaged Parquet footer: row group " + std::to_string(g) + " declares " +
                                         std::to_string(group_rows) + " rows but its column '" +
                                         chunk->path_in_schema()->ToDotString() + "' holds " +
                                         std::to_string(chunk->num_values()) + " values");
        }
        rows += group_rows;
    }
    if (rows != metadata.num_rows())
        fail(ErrorKind::kIo, path + ": damaged Parquet footer: its row groups hold " + std::to_string(rows) +
                                 " rows, the file declares " + std::to_string(metadata.num_rows()));
}

}  // namespace

bool arrow_available() { return true; }

void read_parquet(const std::string& path, std::vector<nlohmann::ordered_json>& out) {
    auto file = value_or_fail(arrow::io::ReadableFile::Open(path), path);
    auto reader = value_or_fail(parquet::arrow::OpenFile(file, arrow::default_memory_pool()), path);
    // Arrow's Result-returning calls catch the Parquet library's exceptions; the footer's own
    // accessors (a column chunk's statistics checked as it is decoded) throw them.
    try {
        check_row_counts(*reader->parquet_reader()->metadata(), path);
    } catch (const parquet::ParquetException& error) {
        fail(ErrorKind::kIo, path + ": damaged Parquet footer (" + error.what() + ")");
    }
    auto table = value_or_fail(reader->ReadTable(), path);
    append_table(*table, path, out);
}

std::optional<std::string> parquet_schema_metadata(const std::string& path, const std::string& key) {
    try {
        auto file = arrow::io::ReadableFile::Open(path);
        if (!file.ok()) return std::nullopt;
        auto reader = parquet::ParquetFileReader::Open(*file);
        const auto metadata = reader->metadata()->key_value_metadata();
        if (!metadata) return std::nullopt;
        const int index = metadata->FindKey(key);
        if (index < 0) return std::nullopt;
        return metadata->value(index);
    } catch (const parquet::ParquetException&) {
        return std::nullopt;
    }
}

void read_arrow_stream(const std::string& path, std::vector<nlohmann::ordered_json>& out) {
    auto file = value_or_fail(arrow::io::ReadableFile::Open(path), path);
    auto reader = value_or_fail(arrow::ipc::RecordBatchStreamReader::Open(file), path);
    std::shared_ptr<arrow::Table> table;
    auto batches = value_or_fail(reader->ToRecordBatches(), path);
    table = value_or_fail(arrow::Table::FromRecordBatches(reader->schema(), batches), path);
    append_table(*table, path, out);
}

#else

bool arrow_available() { return false; }

namespace {
[[noreturn]] void no_arrow(const std::string& path) {
    fail(ErrorKind::kConfig, path + ": this build has no Arrow/Parquet reader (it comes from the pyarrow wheel "
                                    "found at configure time); convert the split to JSON lines, e.g. "
                                    "pandas.read_parquet(f).to_json(out, orient='records', lines=True)");
}
}  // namespace

void read_parquet(const std::string& path, std::vector<nlohmann::ordered_json>&) { no_arrow(path); }
void read_arrow_stream(const std::string& path, std::vector<nlohmann::ordered_json>&) { no_arrow(path); }
std::optional<std::string> parquet_schema_metadata(const std::string&, const std::string&) { return std::nullopt; }

#endif

}  // namespace ftl::data
