/* err.c - text for the CL_E* codes; see err.h. */
#include "err.h"

const char *cl_strerror(int err)
{
    switch (err) {
    case CL_OK: return "success";
#define CL_ERR_STR_(name, num, msg) case CL_E##name: return msg;
    CL_ERRNO_MAP(CL_ERR_STR_)
#undef CL_ERR_STR_
    }
    return "unknown error";
}

const char *cl_errname(int err)
{
    switch (err) {
    case CL_OK: return "CL_OK";
#define CL_ERR_NAME_(name, num, msg) case CL_E##name: return "CL_E" #name;
    CL_ERRNO_MAP(CL_ERR_NAME_)
#undef CL_ERR_NAME_
    }
    return "CL_E?";
}
