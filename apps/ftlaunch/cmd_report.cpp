// `ftlaunch report OUTPUT_DIR`: the run report (report/html_report.h), for a run that is still
// going, was killed, or finished.
#include "commands.h"
#include "report/html_report.h"

namespace ftl::app {

int run_report(const std::string& output_dir, const Log& log) {
    log.info("wrote " + report::write_report(output_dir));
    return 0;
}

}  // namespace ftl::app
