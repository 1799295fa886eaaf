using System;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace Virtio.Ring.Internal;

/// <summary>
/// Throws for caller bugs (bad arguments from the embedding VMM, use after dispose). Errors that come from the
/// other side of a ring are never thrown: they become a <see cref="QueueError"/> on the queue.
/// Keeping the throw sites out of line keeps the callers' fast paths small enough to inline.
/// </summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void ThrowArgumentOutOfRange(string paramName, string message) =>
        throw CreateArgumentOutOfRange(paramName, message);

    [DoesNotReturn]
    public static void ThrowArgument(string paramName, string message) =>
        throw CreateArgument(paramName, message);

    [DoesNotReturn]
    public static void ThrowInvalidOperation(string message) =>
        throw CreateInvalidOperation(message);

    [DoesNotReturn]
    public static void ThrowObjectDisposed(string objectName) =>
        throw CreateObjectDisposed(objectName);

    [DoesNotReturn]
    public static void ThrowInsufficientMemory(string message) =>
        throw CreateInsufficientMemory(message);

    [DoesNotReturn]
    public static void ThrowPlatformNotSupported(string message) =>
        throw CreatePlatformNotSupported(message);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ArgumentOutOfRangeException CreateArgumentOutOfRange(string paramName, string message) =>
        new(paramName, message);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ArgumentException CreateArgument(string paramName, string message) =>
        new(message, paramName);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static InvalidOperationException CreateInvalidOperation(string message) => new(message);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ObjectDisposedException CreateObjectDisposed(string objectName) => new(objectName);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static InsufficientMemoryException CreateInsufficientMemory(string message) => new(message);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static PlatformNotSupportedException CreatePlatformNotSupported(string message) => new(message);
}
