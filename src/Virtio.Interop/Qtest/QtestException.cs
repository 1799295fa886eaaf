using System;

namespace Virtio.Interop.Qtest;

/// <summary>QEMU answered a qtest command with <c>FAIL</c> or <c>ERR</c> (or an unreadable line).</summary>
public sealed class QtestException : Exception
{
    /// <summary>Creates the exception for <paramref name="command"/> and QEMU's <paramref name="reply"/>.</summary>
    public QtestException(string command, string reply)
        : base($"qtest: '{command}' answered '{reply}'")
    {
        Command = command;
        Reply = reply;
    }

    /// <summary>Creates the exception with a message.</summary>
    public QtestException(string message)
        : base(message)
    {
        Command = string.Empty;
        Reply = string.Empty;
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public QtestException(string message, Exception innerException)
        : base(message, innerException)
    {
        Command = string.Empty;
        Reply = string.Empty;
    }

    /// <summary>Creates the exception.</summary>
    public QtestException()
        : this("qtest failed")
    {
    }

    /// <summary>The command sent.</summary>
    public string Command { get; }

    /// <summary>QEMU's reply.</summary>
    public string Reply { get; }
}
