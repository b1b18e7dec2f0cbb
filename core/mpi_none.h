/* core/mpi_none.h — the few MPI names core/comm.c uses, for builds without Open MPI
 * (make MPI=0, -DRT_NO_MPI): a GPU machine without the -dev packages builds the single-process
 * retort with this. Nothing here communicates: comm_open refuses COMM_MPI in such a build
 * (RT_EUNSUPPORTED, "built without MPI"), so none of these is reached with more than one rank;
 * each returns MPI_ERR_OTHER all the same. Included by core/comm_int.h only. */
#ifndef RT_CORE_MPI_NONE_H
#define RT_CORE_MPI_NONE_H

#include <stdarg.h>
#include <string.h>

typedef int MPI_Comm;
typedef int MPI_Datatype;
typedef int MPI_Info;
typedef int MPI_Errhandler;

#define MPI_SUCCESS 0
#define MPI_ERR_OTHER 16
#define MPI_MAX_ERROR_STRING 64
#define MPI_COMM_WORLD 0
#define MPI_COMM_TYPE_SHARED 1
#define MPI_INFO_NULL 0
#define MPI_ERRORS_RETURN 0
#define MPI_DATATYPE_NULL 0
#define MPI_IN_PLACE ((void *)1)
#define MPI_FLOAT 1
#define MPI_DOUBLE 2
#define MPI_INT32_T 3
#define MPI_INT64_T 4
#define MPI_UINT8_T 5

/* takes (and so uses) the call's arguments, does nothing */
static inline int rt_mpi_none(int unused, ...) {
    (void)unused;
    return MPI_ERR_OTHER;
}
static inline int MPI_Error_string(int e, char *s, int *len) {
    (void)e;
    strcpy(s, "built without MPI");
    *len = (int)strlen(s);
    return MPI_SUCCESS;
}
static inline int MPI_Initialized(int *flag) { *flag = 0; return MPI_SUCCESS; }
#define MPI_Init(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Finalize() rt_mpi_none(0)
#define MPI_Abort(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Comm_set_errhandler(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Comm_rank(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Comm_size(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Comm_split_type(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Comm_free(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Alltoall(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Alltoallv(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Allgather(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Gather(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Bcast(...) rt_mpi_none(0, __VA_ARGS__)
#define MPI_Barrier(...) rt_mpi_none(0, __VA_ARGS__)

#endif
