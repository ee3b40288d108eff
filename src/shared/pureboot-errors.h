/* SPDX-License-Identifier: MIT */
/* Named D-Bus errors of org.pureboot.Controller1, shared by the controller and its clients. */
#pragma once

#include "pureboot-bus.h"

#define PB_ERROR_PREFIX PB_BUS_NAME ".Error."
#define PB_ERROR_NO_SUCH_SESSION PB_ERROR_PREFIX "NoSuchSession"
#define PB_ERROR_NO_SUCH_NODE PB_ERROR_PREFIX "NoSuchNode"
#define PB_ERROR_NO_SUCH_STORAGE PB_ERROR_PREFIX "NoSuchStorageBackend"
#define PB_ERROR_NO_SUCH_CERTIFICATE PB_ERROR_PREFIX "NoSuchCertificate"
#define PB_ERROR_INVALID_ARGUMENT PB_ERROR_PREFIX "InvalidArgument"
#define PB_ERROR_INVALID_STATE PB_ERROR_PREFIX "InvalidState"
#define PB_ERROR_ALREADY_EXISTS PB_ERROR_PREFIX "AlreadyExists"
#define PB_ERROR_IN_USE PB_ERROR_PREFIX "InUse"
#define PB_ERROR_INSUFFICIENT_SPACE PB_ERROR_PREFIX "InsufficientSpace"
#define PB_ERROR_PLAN_INFEASIBLE PB_ERROR_PREFIX "PlanInfeasible"
#define PB_ERROR_NO_SUCH_DISK PB_ERROR_PREFIX "NoSuchDisk"
#define PB_ERROR_NO_SUCH_BASE_IMAGE PB_ERROR_PREFIX "NoSuchBaseImage"
#define PB_ERROR_NO_SUCH_OPERATION PB_ERROR_PREFIX "NoSuchOperation"
#define PB_ERROR_NO_SUCH_IMAGE PB_ERROR_PREFIX "NoSuchImage"
/* A partition operation the disk does not allow; the message says what would fit. */
#define PB_ERROR_OPERATION_REFUSED PB_ERROR_PREFIX "OperationRefused"
#define PB_ERROR_STORAGE_UNAVAILABLE PB_ERROR_PREFIX "StorageUnavailable"
#define PB_ERROR_NOT_AUTHORIZED PB_ERROR_PREFIX "NotAuthorized"
#define PB_ERROR_BAD_REQUEST PB_ERROR_PREFIX "BadCertificateRequest"
#define PB_ERROR_STORE PB_ERROR_PREFIX "StoreFailure"
