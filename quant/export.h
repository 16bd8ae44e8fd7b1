/* export.h - TEMPORARY forwarder while cli/int8.c and bench/ move to export/int8.h. */
#ifndef QAT_EXPORT_H
#define QAT_EXPORT_H
#include "export/int8.h"
#define qat_export qat_export_int8
#endif
