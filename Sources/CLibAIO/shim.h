// Linux native AIO through libaio: io_setup/io_submit/io_getevents and the io_prep_* helpers import as is.
#include <libaio.h>
