// TensorBoard event files, written without TensorFlow or protobuf: the TFRecord framing and the
// three messages a scalar needs, encoded by hand.
//
// File: events.out.tfevents.<unix seconds>.<hostname>.<pid>.<n> in the log folder (the name
// TensorBoard's reader looks for). Each record is
//   uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// with masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (TFRecord's framing).
// The data is a serialised tensorflow.Event (tensorflow/core/util/event.proto):
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first record carries file_version "brain.Event:2", as every TensorFlow writer's does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace ftl::report {

// One event file, appended to and flushed record by record (TensorBoard picks up a running job).
class EventFileWriter {
public:
    // Creates `log_dir` (and parents) and a new event file in it. Throws ftl::Error(kIo) naming
    // the folder when it cannot be written.
    explicit EventFileWriter(const std::string& log_dir);
    ~EventFileWriter();
    EventFileWriter(const EventFileWriter&) = delete;
    EventFileWriter& operator=(const EventFileWriter&) = delete;

    // One scalar: `tag` (e.g. "train/loss") at `step`, stored as float32 as TensorBoard does.
    void add_scalar(const std::string& tag, double value, int64_t step, double wall_time);
    const std::string& path() const { return path_; }

private:
    void write_record(const std::string& data);
    std::string path_;
    std::FILE* file_ = nullptr;
};

}  // namespace ftl::report
