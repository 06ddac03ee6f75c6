using Microsoft.AspNetCore.Http;

namespace WhereToEdit.Server;

/// <summary>A request the server refuses: HTTP status and one message naming the field and what is wrong.</summary>
public sealed class ApiError(int status, string message, object? details = null) : Exception(message)
{
    public int Status { get; } = status;
    /// <summary>Extra JSON properties of the answer (a failed edit's record).</summary>
    public object? Details { get; } = details;

    public static ApiError BadRequest(string message) => new(StatusCodes.Status400BadRequest, message);
}
