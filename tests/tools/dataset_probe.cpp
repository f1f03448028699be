// Prints the records ftlaunch reads from a dataset's split, one JSON object per line, for the
// parity test against datasets.load_dataset (tests/parity/test_csv_dataset.py).
// Usage: ftl_dataset_probe <dataset folder or file> <split>. Exit 2 with the message on bad input.
#include <cstdio>
#include <iostream>

#include "data/dataset.h"
#include "util/error.h"

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: ftl_dataset_probe <dataset> <split>\n");
        return 2;
    }
    try {
        for (const auto& record : ftl::data::read_split(argv[1], argv[2])) std::cout << record.dump() << "\n";
        return 0;
    } catch (const ftl::Error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
}
