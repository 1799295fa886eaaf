using System;

namespace Virtio.Interop.Qmp;

/// <summary>A QMP command answered with an error.</summary>
public sealed class QmpException : Exception
{
    /// <summary>Creates the exception from QEMU's error class and description.</summary>
    public QmpException(string command, string errorClass, string description)
        : base($"QMP '{command}': {errorClass}: {description}")
    {
        ErrorClass = errorClass;
    }

    /// <summary>Creates the exception with a message.</summary>
    public QmpException(string message)
        : base(message) => ErrorClass = string.Empty;

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public QmpException(string message, Exception innerException)
        : base(message, innerException) => ErrorClass = string.Empty;

    /// <summary>Creates the exception.</summary>
    public QmpException()
        : this("QMP failed")
    {
    }

    /// <summary>QEMU's error class (GenericError, CommandNotFound, ...).</summary>
    public string ErrorClass { get; }
}
