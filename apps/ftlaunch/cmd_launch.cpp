// `ftlaunch [launcher flags] <job> [job flags]`: resolve the whole configuration, then print the
// plan (--dry_run) or start the job's workers.
#include <iostream>

#include "commands.h"
#include "launch/plan.h"
#include "util/error.h"
#include "workers.h"

namespace ftl::app {

int run_launch(const Invocation& inv, const Log& log) {
    const config::RunConfig run = config::resolve_run_config(inv.flags, inv.job_token, inv.job_argv);
    const auto identity = worker_identity(run.accelerate);
    if (!identity)
        for (const auto& warning : run.warnings) log.warn(warning);

    const launch::LaunchPlan plan = launch::make_launch_plan(run.accelerate, &run.deepspeed, run.uses_deepspeed,
                                                             run.mixed_precision, launch::probe_machine(),
                                                             /*for_real=*/!inv.flags.dry_run && !identity);
    if (inv.flags.dry_run) {
        nlohmann::json out = run.to_json();
        out["launch_plan"] = plan.to_json();
        std::cout << out.dump(2) << std::endl;
        return 0;
    }
    ftl::fail(ErrorKind::kUsage,
              "the " + config::to_string(run.train.job) +
                  " job is not part of this build yet: its configuration resolves (see --dry_run), but the "
                  "trainer that runs it is still being written (issue 4). `ftlaunch test` checks the ranks.");
}

}  // namespace ftl::app
