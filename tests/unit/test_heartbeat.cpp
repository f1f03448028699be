// The heartbeat record the launcher's watchdog reads: round trip, watched flag, long phases cut
// to fit, a missing file, and a disabled heartbeat that writes nothing.
#include <unistd.h>

#include <filesystem>
#include <string>

#include "catch.h"
#include "util/heartbeat.h"

using namespace ftl;

TEST_CASE("a heartbeat record reads back with its time, flag and phase", "[heartbeat]") {
    const std::string path = std::filesystem::temp_directory_path() / ("ftl_heartbeat_" + std::to_string(::getpid()));
    {
        const Heartbeat beat(path);
        const int64_t before = unix_milliseconds();
        beat.unwatched("loading the model");
        auto record = read_heartbeat(path);
        REQUIRE(record);
        CHECK_FALSE(record->watched);
        CHECK(record->phase == "loading the model");
        CHECK(record->unix_ms >= before);
        beat.phase("step 3: optimizer");  // shorter: the rest of the old record is overwritten
        record = read_heartbeat(path);
        REQUIRE(record);
        CHECK(record->watched);
        CHECK(record->phase == "step 3: optimizer");
        beat.phase(std::string(1000, 'x'));
        record = read_heartbeat(path);
        REQUIRE(record);
        CHECK(record->phase.size() < Heartbeat::kRecordBytes);
    }
    std::filesystem::remove(path);
    CHECK_FALSE(read_heartbeat(path));
    const Heartbeat disabled;
    disabled.phase("nothing");  // no file, no error
}
