/* SPDX-License-Identifier: MIT */
/* Fuzzes the workflow loader: YAML bytes → Workflow, and rendering what loads. */
#include "log.h"
#include "workflow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *error = NULL, *line = NULL;
        Workflow w;
        FILE *f;

        log_set_max_level(LOG_CRIT);
        if (size == 0)
                return 0;
        f = fmemopen((void *) data, size, "r");
        if (!f)
                return 0;
        /* The id must match the name: "fuzz" lets well-formed inputs get as far as rendering. */
        if (workflow_load_stream(f, "fuzz.yaml", &w, &error) >= 0) {
                line = workflow_render_cmdline(&w, "192.0.2.1", "0123", "aa:bb:cc:dd:ee:ff", "192.0.2.2");
                workflow_done(&w);
        }
        fclose(f);
        return 0;
}
