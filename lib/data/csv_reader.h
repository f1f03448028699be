// CSV split files read as datasets.load_dataset("csv") reads them: pandas.read_csv with its
// defaults (comma separator, '"' quoting with "" for a quote inside, header row, blank lines
// skipped, pandas' default NA strings), each column's type inferred from its values (int, float,
// bool, else string; an int column with a missing value becomes float, as pandas makes it), then
// pyarrow's from_pandas, which turns every missing value into null.
// Deviation: types are inferred over the whole file; datasets infers them on its first chunk of
// 10,000 rows and casts the rest to them (a file whose later rows change a column's kind fails
// there and reads here).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ftl::data {

// Appends one JSON object per data row of the CSV file at `path`. Throws ftl::Error(kConfig)
// naming the file and line for text that is not UTF-8, an unterminated quoted field, or a row
// with more fields than the header.
void read_csv(const std::string& path, std::vector<nlohmann::ordered_json>& out);

// The same from CSV text (`source` names it in errors).
void parse_csv(const std::string& text, const std::string& source, std::vector<nlohmann::ordered_json>& out);

}  // namespace ftl::data
